//! Corruption matrix: garbage, JSON of the wrong types and truncated documents under every
//! kind of datastore key. For each of them the agent (its own reconcile steps over a
//! simulated host) survives, logs the key when the record fails to decode, leaves the rest
//! of the host's policy as it was, and programs the next change; calicoctl's show commands
//! still answer with the good rows.

mod agent_support;
mod calicoctl_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use agent_support::*;
use calico_backends::{MemStore, Store};
use calico_core::codec::decode;
use calico_core::desired::{DesiredState, Route};
use calico_core::keys::Key;

/// Every kind of key, each with a valid value (to truncate). None of them belongs to
/// workload A or its profile PROF, whose programming must survive every corruption.
const KEYS: &[(&str, &str)] = &[
    ("/calico/v1/Ready", "true"),
    ("/calico/v1/config/LogSeverityScreen", "info"),
    (
        "/calico/v1/host/host2/config/DefaultEndpointToHostAction",
        "DROP",
    ),
    ("/calico/v1/host/host2/bird_ip", "172.31.250.2"),
    (
        "/calico/v1/host/host1/workload/docker/V/endpoint/epV",
        r#"{"state": "active", "name": "caliV", "mac": "ee:ee:ee:ee:ee:02", "profile_ids": ["PV"], "ipv4_nets": ["192.168.1.9/32"], "ipv6_nets": []}"#,
    ),
    (
        "/calico/v1/policy/profile/PV/rules",
        r#"{"inbound_rules": [{"action": "allow", "src_tag": "PV"}], "outbound_rules": [{"action": "allow"}]}"#,
    ),
    ("/calico/v1/policy/profile/PV/tags", r#"["PV"]"#),
    (
        "/calico/v1/ipam/v4/pool/10.0.0.0-8",
        r#"{"cidr": "10.0.0.0/8", "masquerade": true}"#,
    ),
    ("/calico/bgp/v1/global/as_num", "64511"),
    ("/calico/bgp/v1/global/node_mesh", r#"{"enabled": true}"#),
    ("/calico/bgp/v1/global/loglevel", "info"),
    (
        "/calico/bgp/v1/global/peer_v4/172.31.250.9",
        r#"{"ip": "172.31.250.9", "as_num": "64512"}"#,
    ),
    ("/calico/bgp/v1/host/host2/ip_addr_v4", "172.31.250.2"),
    ("/calico/bgp/v1/host/host2/as_num", "64513"),
    ("/calico/bgp/v1/host/host2/loglevel", "debug"),
    (
        "/calico/bgp/v1/host/host1/peer_v4/172.31.250.8",
        r#"{"ip": "172.31.250.8", "as_num": "64514"}"#,
    ),
    (
        "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26",
        r#"{"cidr": "10.0.0.0/26", "affinity": "host:host2", "allocations": [], "unallocated": [], "attributes": []}"#,
    ),
    ("/calico/ipam/v2/host/host2/ipv4/block/10.0.0.0-26", ""),
    (
        "/calico/ipam/v2/handle/someone",
        r#"{"block": {"10.0.0.0/26": 1}}"#,
    ),
    (
        "/calico/felix/v1/host/host2/status",
        r#"{"time": "2016-01-01T00:00:00Z", "uptime": 1.0, "first_update": true}"#,
    ),
];

/// The corruptions, by name; `truncate` cuts the key's valid value in half.
fn corruptions(valid: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("garbage", b"\xff\xfe\x00garbage{{\"".to_vec()),
        (
            "wrong types",
            br#"{"cidr": 42, "state": [], "name": 7, "ip": {}, "enabled": "yes", "inbound_rules": "x", "profile_ids": 1}"#.to_vec(),
        ),
        ("wrong type list", br#"[1, "two", null, {"action": 3}]"#.to_vec()),
        ("truncated", valid.as_bytes()[..valid.len() / 2].to_vec()),
    ]
}

/// Log lines written while a test runs, for asserting the agent named the key.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.lock().unwrap())).into_owned()
    }
}

/// Chains of workload A and its profile: what no other record may change.
fn a_and_prof(state: &DesiredState) -> Vec<String> {
    state
        .tables
        .values()
        .flat_map(|t| t.chains.iter())
        .filter(|(name, _)| name.contains("caliA") || name.contains("PROF"))
        .map(|(name, chain)| format!("{name}: {chain:?}"))
        .collect()
}

fn route_to(ip: &str, workload: &str) -> Route {
    Route {
        dst: format!("{ip}/32").parse().unwrap(),
        dev: iface(workload),
    }
}

#[tokio::test]
async fn corrupt_records_under_every_key_leave_the_rest_working() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut cases = 0;
    let mut logged = 0;
    for &(key, valid) in KEYS {
        for (corruption, bytes) in corruptions(valid) {
            let what = format!("{corruption} under {key}");
            let store = Arc::new(MemStore::new());
            let sim = sim();
            seed(store.as_ref()).await;
            set_ready(store.as_ref()).await;
            add_profile(store.as_ref(), "PROF").await;
            add_local_endpoint(store.as_ref(), &sim, "A", "192.168.1.1", &["PROF"]).await;
            store.put(key, valid.as_bytes().to_vec()).await.unwrap();
            let mut agent = agent(store.clone(), sim.clone());
            agent.start().await.unwrap();
            let before = a_and_prof(&sim.observe_now());
            assert!(
                !before.is_empty(),
                "{what}: A is not programmed to begin with"
            );
            let invalid_before = agent.metrics().snapshot().invalid_records;
            logs.take();

            store.put(key, bytes.clone()).await.unwrap();
            if let Err(e) = agent.poll_once().await {
                panic!("{what}: the agent's step failed: {e}");
            }
            let text = logs.take();
            let undecodable = Key::parse(key)
                .ok()
                .filter(calico_core::cluster::ClusterState::depends_on)
                .is_some_and(|k| decode(&k, &bytes).is_err());
            if undecodable {
                assert!(
                    text.contains(key),
                    "{what}: the log does not name the key:\n{text}"
                );
                assert_eq!(
                    agent.metrics().snapshot().invalid_records,
                    invalid_before + 1,
                    "{what}: not counted"
                );
                logged += 1;
            }
            let after = sim.observe_now();
            assert_eq!(a_and_prof(&after), before, "{what}: A's policy changed");
            assert!(
                after.routes.contains(&route_to("192.168.1.1", "A")),
                "{what}: A's route went"
            );

            // calicoctl still shows the good rows.
            let shared: Arc<dyn Store> = store.clone();
            let ctl = calicoctl_support::Host::new(shared, HOST);
            for (line, needle) in [
                ("endpoint show --detailed", "epA"),
                ("profile show --detailed", "PROF"),
                ("pool show", "192.168.0.0/16"),
                ("bgp peer show", "Peer address"),
            ] {
                match ctl.try_run(line).await {
                    Ok(out) => assert!(out.contains(needle), "{what}: {line}:\n{out}"),
                    Err(e) => panic!("{what}: calicoctl {line} failed: {e}"),
                }
            }

            // Everything else keeps working: a new workload is programmed (unless Ready
            // itself was corrupted: then the agent rightly waits for the datastore).
            add_local_endpoint(store.as_ref(), &sim, "B", "192.168.1.2", &["PROF"]).await;
            agent.poll_once().await.unwrap();
            if key != "/calico/v1/Ready" {
                assert!(
                    sim.observe_now()
                        .routes
                        .contains(&route_to("192.168.1.2", "B")),
                    "{what}: B was not programmed after the corruption"
                );
            }
            cases += 1;
        }
    }
    println!(
        "corruption: {cases} cases ({} key kinds x 4 corruptions), {logged} undecodable records logged by key, 0 agent failures",
        KEYS.len()
    );
}
