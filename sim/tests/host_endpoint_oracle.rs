//! Host endpoint egress: for what each host itself sends, the packet walk through the
//! simulated kernels (rules as rendered) gets the verdict the oracle predicts from the data
//! model. Every receiver here is open (profile OPEN, an external machine), so the sender's
//! host endpoint policy alone decides.

use std::net::IpAddr;
use std::sync::Arc;

use calico_backends::{MemStore, Store};
use calico_sim::scenario::{parse, Runner, ScenarioTarget};
use calico_sim::{ops, Oracle, Probe, Verdict};

/// host1's eth0 (by name) runs the egress policy edge-out; host2's host endpoint claims its
/// address and falls back to the profile HOSTOUT (tcp/8080 out only); host2's failsafe list
/// is narrowed by config.
const CLUSTER: &str = r#"
host host1 172.31.250.1
host host2 172.31.250.2
external outside 172.31.250.100
host1$ calicoctl node --ip=172.31.250.1
host2$ calicoctl node --ip=172.31.250.2
workload host1 app
workload host2 web
host1$ calicoctl container add app 192.168.1.1
host2$ calicoctl container add web 192.168.2.1
host1$ calicoctl apply -f - <<EOF
- apiVersion: v1
  kind: profile
  metadata: {name: OPEN}
  spec:
    ingress: [{action: allow}]
    egress: [{action: allow}]
- apiVersion: v1
  kind: profile
  metadata: {name: HOSTOUT}
  spec:
    ingress: [{action: allow}]
    egress: [{action: allow, protocol: tcp, destination: {ports: [8080]}}]
- apiVersion: v1
  kind: policy
  metadata: {name: edge-out}
  spec:
    selector: role == 'edge'
    types: [egress]
    egress:
    - action: deny
      destination: {net: 172.31.250.100/32}
    - action: allow
      protocol: tcp
      destination: {net: 172.31.250.0/24}
- apiVersion: v1
  kind: hostEndpoint
  metadata: {name: eth0, node: host1, labels: {role: edge}}
  spec: {interfaceName: eth0, profiles: [OPEN]}
- apiVersion: v1
  kind: hostEndpoint
  metadata: {name: main, node: host2}
  spec: {expectedIPs: [172.31.250.2], profiles: [HOSTOUT]}
EOF
host1$ calicoctl container app profile set OPEN
host2$ calicoctl container web profile set OPEN
host2$ calicoctl config felix FailsafeOutboundHostPorts udp:53,tcp:2379
settle
"#;

fn address(name: &str) -> IpAddr {
    match name {
        "outside" => "172.31.250.100",
        "host1" => "172.31.250.1",
        "host2" => "172.31.250.2",
        "app" => "192.168.1.1",
        _ => "192.168.2.1",
    }
    .parse()
    .unwrap()
}

#[tokio::test]
async fn host_egress_walk_agrees_with_the_oracle() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut runner = Runner::new(store.clone());
    let lines = parse(CLUSTER).unwrap();
    if let Err(e) = runner.run(&lines, |_| {}).await {
        panic!("building the cluster: {e}");
    }
    let state = ops::cluster_state(store.as_ref()).await.unwrap();
    let oracle = Oracle::new(&state);

    let mut probes = Probe::standard().to_vec();
    probes.extend([
        Probe::tcp(8080),
        Probe::tcp(2379),
        Probe::tcp(179),
        Probe::udp(53),
    ]);
    let (mut allowed, mut denied) = (0, 0);
    for host in ["host1", "host2"] {
        for dst in ["outside", "host1", "host2", "app", "web"] {
            if dst == host {
                continue;
            }
            // A workload of the sending host is behind its own interface; everything else
            // leaves by the wire.
            let out_iface = match oracle.endpoint_of_workload(dst) {
                Some((id, ep)) if id.host == host => ep.name.as_str(),
                _ => "eth0",
            };
            for probe in &probes {
                let walk = runner.world().send(host, dst, *probe).unwrap();
                let addrs = (address(host), address(dst));
                let expected = oracle.decide_host_egress(host, out_iface, addrs, *probe);
                assert_eq!(
                    walk.verdict, expected.verdict,
                    "{host} -> {dst} {probe}\n{walk}\noracle: {expected}"
                );
                match expected.verdict {
                    Verdict::Allow => allowed += 1,
                    Verdict::Deny => denied += 1,
                }
            }
        }
    }
    // The cluster is built so that both verdicts occur often.
    assert!(
        allowed > 10 && denied > 10,
        "{allowed} allowed, {denied} denied"
    );
}
