//! Anti-spoofing on real hosts: a workload sending with another workload's source IP, or
//! with a forged MAC, is dropped before it reaches anyone, while the same workload sending
//! as itself gets through. Arrivals are counted by rules in the destination's namespace.
//! Then, with DefaultEndpointToHostAction DROP on the sending host, its workloads reach no
//! host port while they still reach each other.

mod linux_common;

use calico_sim::linux::LinuxRunner;
use linux_common::{exec, packets};

/// Three workloads in one profile, so only spoofing (not policy) can drop C's packets.
const SETUP: &str = "\
host host1 172.31.250.1
host host2 172.31.250.2
host1$ calicoctl node --ip=172.31.250.1
host2$ calicoctl node --ip=172.31.250.2
workload host1 workload_A
workload host2 workload_B
workload host1 workload_C
host1$ calicoctl container add workload_A 192.168.1.1
host2$ calicoctl container add workload_B 192.168.1.2
host1$ calicoctl container add workload_C 192.168.1.3
host1$ calicoctl profile add PROF_A_B
host1$ calicoctl container workload_A profile set PROF_A_B
host2$ calicoctl container workload_B profile set PROF_A_B
host1$ calicoctl container workload_C profile set PROF_A_B
expect workload_C -> workload_B icmp allow
";

/// What must hold once host1's DefaultEndpointToHostAction is DROP (DNS and DHCP to the
/// host stay open, as Felix leaves them); the simulator's twin is in
/// `reliability_isolation.rs`.
const HOST_DROP: &str = "\
expect workload_A -> host1 tcp/22 deny
expect workload_A -> host1 udp/8053 deny
expect workload_A -> host1 icmp deny
expect workload_C -> host1 tcp/8179 deny
expect workload_A -> workload_B icmp allow
expect workload_B -> workload_A tcp/80 allow
";

fn ping(ns: &str, args: &[&str]) -> bool {
    let mut full = vec!["-c1", "-W1"];
    full.extend_from_slice(args);
    exec(ns, "ping", &full).0
}

#[tokio::test]
async fn spoofed_source_ip_or_mac_is_dropped_and_host_ports_closed() {
    let Some(config) =
        linux_common::setup("spoofed_source_ip_or_mac_is_dropped_and_host_ports_closed")
    else {
        return;
    };
    let mut runner = LinuxRunner::new(config).unwrap();
    linux_common::run_text(&mut runner, SETUP).await;
    let cluster = runner.cluster();
    let b = cluster.workload_netns("workload_B").unwrap();
    let c = cluster.workload_netns("workload_C").unwrap();
    // Counting rules (no target) in B: what arrives from A's and from C's address.
    for src in ["192.168.1.1", "192.168.1.3"] {
        let (ok, _) = exec(b, "iptables", &["-A", "INPUT", "-p", "icmp", "-s", src]);
        assert!(ok, "adding a counting rule in {b}");
    }

    // Control: C as itself reaches B.
    assert!(ping(c, &["192.168.1.2"]), "C as itself must reach B");
    assert!(packets(b, "INPUT", "192.168.1.3") >= 1);

    // C with A's address: nothing from 192.168.1.1 arrives at B.
    let (ok, _) = exec(c, "ip", &["addr", "add", "192.168.1.1/32", "dev", "eth1"]);
    assert!(ok, "adding A's address in C");
    assert!(!ping(c, &["-I", "192.168.1.1", "192.168.1.2"]));
    assert_eq!(
        packets(b, "INPUT", "192.168.1.1"),
        0,
        "a spoofed packet reached B"
    );
    let (ok, _) = exec(c, "ip", &["addr", "del", "192.168.1.1/32", "dev", "eth1"]);
    assert!(ok);

    // C with a forged MAC: its packets stop arriving; with its own MAC back, they flow again.
    let (_, link) = exec(c, "ip", &["-o", "link", "show", "eth1"]);
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {link:?}"))
        .to_string();
    let arrived = packets(b, "INPUT", "192.168.1.3");
    let (ok, _) = exec(
        c,
        "ip",
        &["link", "set", "eth1", "address", "02:00:00:00:00:99"],
    );
    assert!(ok, "forging C's MAC");
    assert!(!ping(c, &["192.168.1.2"]));
    assert_eq!(
        packets(b, "INPUT", "192.168.1.3"),
        arrived,
        "a packet with a forged MAC reached B"
    );
    let (ok, _) = exec(c, "ip", &["link", "set", "eth1", "address", &mac]);
    assert!(ok);
    assert!(
        ping(c, &["192.168.1.2"]),
        "C with its own MAC again must reach B"
    );
    assert!(packets(b, "INPUT", "192.168.1.3") > arrived);

    // Workload to host: with host1's DefaultEndpointToHostAction DROP, no host port is
    // reachable from its workloads while they still reach each other. calicoctl writes no
    // per-host Felix config: set it in etcd as an operator would, from host1.
    linux_common::run_text(&mut runner, "expect workload_A -> host1 tcp/22 allow\n").await;
    let cluster = runner.cluster();
    let h1 = cluster.host_netns("host1").unwrap();
    let (ok, out) = exec(
        h1,
        "env",
        &[
            "ETCDCTL_API=3",
            "etcdctl",
            "--endpoints",
            &cluster.etcd_endpoint(),
            "put",
            "/calico/v1/host/host1/config/DefaultEndpointToHostAction",
            "DROP",
        ],
    );
    assert!(ok, "etcdctl put: {out}");
    linux_common::run_text(&mut runner, HOST_DROP).await;
}
