//! Overlays on real kernels. VXLAN: cross-host workload pings in a VXLAN pool go through
//! `vxlan.calico` (its receive counter moves on the receiving host) while the hosts' link
//! carries no packet with a workload address (iptables counters on `eth0`) and does carry
//! UDP 4789. IPIP: where the kernel has it, the same through `tunl0`; where it does not
//! (`CONFIG_NET_IPIP` unset), the IPIP traffic part is reported skipped and what must hold
//! there is checked instead: the agent says so, `calicoctl status` shows it, and a plain
//! pool still works beside the IPIP pool.

mod linux_common;

use calico_sim::linux::LinuxRunner;

/// The clusters of both tests would share namespace names (they are named by process id):
/// one at a time.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const HOSTS: &str = "\
host host1 172.31.250.1
host host2 172.31.250.2
host1$ calicoctl node --ip=172.31.250.1
host2$ calicoctl node --ip=172.31.250.2
";

/// The setup of one overlay: a pool with `flag`, a workload per host in it, a shared profile.
fn workloads(flag: &str, pool: &str, a: &str, b: &str) -> String {
    format!(
        "host1$ calicoctl pool add {pool} --{flag}
workload host1 workload_A
workload host2 workload_B
host1$ calicoctl container add workload_A {a}
host2$ calicoctl container add workload_B {b}
host1$ calicoctl profile add PROF_A_B
host1$ calicoctl container workload_A profile set PROF_A_B
host2$ calicoctl container workload_B profile set PROF_A_B
settle
"
    )
}

fn rx_packets(ns: &str, dev: &str) -> u64 {
    let (ok, text) = linux_common::exec(ns, "ip", &["-s", "-j", "link", "show", "dev", dev]);
    assert!(ok, "ip -s link show {dev} in {ns}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rx packet counter for {dev} in {ns}: {text}"))
}

/// Counting rules (no target) in the raw table, which the agent never touches: packets on
/// the host link from or to the workload pool, and tunnel packets.
fn add_counters(ns: &str, pool: &str, tunnel: &[&str]) {
    for rule in [
        vec!["-i", "eth0", "-s", pool],
        vec!["-i", "eth0", "-d", pool],
        [vec!["-i", "eth0"], tunnel.to_vec()].concat(),
    ] {
        let mut args = vec!["-t", "raw", "-A", "PREROUTING"];
        args.extend(rule);
        let (ok, _) = linux_common::exec(ns, "iptables", &args);
        assert!(ok, "iptables {args:?} in {ns}");
    }
}

/// Packets counted by each rule of raw PREROUTING, in order (ours are the only ones).
fn counted(ns: &str) -> Vec<u64> {
    let (ok, text) = linux_common::exec(
        ns,
        "iptables",
        &["-t", "raw", "-L", "PREROUTING", "-v", "-n", "-x"],
    );
    assert!(ok);
    // Two header lines, then one line per rule.
    text.lines()
        .skip(2)
        .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .collect()
}

/// Runs the pings and checks the tunnel carried them: `dev`'s rx counter on the receiving
/// host grows by at least the pings' packets, `eth0` saw tunnel packets and no packet from
/// or to the pool.
async fn pings_go_through(runner: &mut LinuxRunner, dev: &str, pool: &str, tunnel_match: &[&str]) {
    let host2 = runner.cluster().host_netns("host2").unwrap().to_string();
    let host1 = runner.cluster().host_netns("host1").unwrap().to_string();
    let (_, route) = linux_common::exec(&host1, "ip", &["route", "get", "10.77.2.1"]);
    assert!(
        route.contains(&format!("dev {dev}")),
        "host1 routes workload_B: {route}"
    );
    add_counters(&host2, pool, tunnel_match);
    let before = rx_packets(&host2, dev);
    linux_common::run_text(
        runner,
        "expect workload_A -> workload_B icmp allow\nexpect workload_A -> workload_B tcp/80 allow\n",
    )
    .await;
    let after = rx_packets(&host2, dev);
    // At least the echo request and the TCP SYN and ACK came in through the tunnel.
    assert!(
        after >= before + 3,
        "{dev} rx on host2: {before} -> {after}"
    );
    let [from_pool, to_pool, tunnelled] = counted(&host2)[..] else {
        panic!("expected our three counting rules in raw PREROUTING of {host2}");
    };
    assert_eq!((from_pool, to_pool), (0, 0), "workload addresses on eth0");
    assert!(tunnelled >= 3, "{tunnelled} tunnel packets on eth0");
}

#[tokio::test]
async fn vxlan_pings_cross_hosts_inside_udp_4789() {
    let Some(config) = linux_common::setup("vxlan_pings_cross_hosts_inside_udp_4789") else {
        return;
    };
    let _one = ONE_CLUSTER.lock().await;
    let mut runner = LinuxRunner::new(config).unwrap();
    let setup = format!(
        "{HOSTS}{}",
        workloads("vxlan", "10.77.0.0/16", "10.77.1.1", "10.77.2.1")
    );
    linux_common::run_text(&mut runner, &setup).await;
    let host2 = runner.cluster().host_netns("host2").unwrap().to_string();
    let (_, link) = linux_common::exec(&host2, "ip", &["-d", "link", "show", "vxlan.calico"]);
    assert!(
        link.contains("mtu 1450")
            && link.contains("vxlan id 4096")
            && link.contains("dstport 4789"),
        "{link}"
    );
    let (_, bird) = linux_common::exec(&host2, "ip", &["route", "show", "proto", "bird"]);
    assert!(
        !bird.contains("10.77.1."),
        "BIRD routes the VXLAN pool: {bird}"
    );
    pings_go_through(
        &mut runner,
        "vxlan.calico",
        "10.77.0.0/16",
        &["-p", "udp", "--dport", "4789"],
    )
    .await;
}

#[tokio::test]
async fn ipip_on_linux_where_the_kernel_has_it() {
    let Some(config) = linux_common::setup("ipip_on_linux_where_the_kernel_has_it") else {
        return;
    };
    let _one = ONE_CLUSTER.lock().await;
    let mut runner = LinuxRunner::new(config).unwrap();
    match linux_common::ipip_supported() {
        Ok(()) => {
            let setup = format!(
                "{HOSTS}{}",
                workloads("ipip", "10.77.0.0/16", "10.77.1.1", "10.77.2.1")
            );
            linux_common::run_text(&mut runner, &setup).await;
            pings_go_through(&mut runner, "tunl0", "10.77.0.0/16", &["-p", "4"]).await;
        }
        Err(reason) => {
            eprintln!("ipip_on_linux_where_the_kernel_has_it: IPIP traffic part SKIPPED: {reason}");
            // What must hold on such a kernel: the agent says so, status shows it, and the
            // rest of the host works (a plain pool beside the IPIP pool).
            let text = format!(
                "{HOSTS}host1$ calicoctl pool add 10.77.0.0/16 --ipip
workload host1 workload_A
workload host2 workload_B
host1$ calicoctl container add workload_A 192.168.3.1
host2$ calicoctl container add workload_B 192.168.3.2
host1$ calicoctl profile add PROF_A_B
host1$ calicoctl container workload_A profile set PROF_A_B
host2$ calicoctl container workload_B profile set PROF_A_B
expect workload_A -> workload_B icmp allow
host1$ calicoctl status
"
            );
            let reports = linux_common::run_text(&mut runner, &text).await;
            let status = &reports.last().unwrap().detail;
            assert!(
                status.contains("CONFIG_NET_IPIP"),
                "calicoctl status: {status}"
            );
            let host1 = runner.cluster().host_netns("host1").unwrap().to_string();
            let (exists, _) = linux_common::exec(&host1, "ip", &["link", "show", "tunl0"]);
            assert!(!exists, "tunl0 exists on a kernel said to lack IPIP");
            let log = std::fs::read_dir(runner.cluster().data_dir("host1").unwrap())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect::<String>();
            assert_eq!(
                log.matches("CONFIG_NET_IPIP").count(),
                1,
                "the agent says it once in its log"
            );
        }
    }
}
