//! Route aggregation by IPAM block (reference 4.4) on the simulator and on real BIRD, with the
//! same scenario: every host's `proto bird` routes are one route per remote block, a /32 for
//! each address borrowed from another host's block, and a blackhole for each of its own blocks
//! — and never a duplicate of the host's own link route (`172.31.250.0/24 dev eth0 proto
//! bird`), which BIRD's kernel export used to write from the `direct` protocol.
//!
//! host1 owns 192.168.1.0/26 (a1, a3); host2 borrows 192.168.1.2 from it (b2) and owns
//! 192.168.1.64/26 (b65); host3 owns 192.168.1.128/26 (c).

mod linux_common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use calico_backends::MemStore;
use calico_dataplane::sim::{RouteProto, ROOT_NS};
use calico_sim::linux::LinuxRunner;
use calico_sim::scenario::{self, Runner, ScenarioTarget};

const SCENARIO: &str = "\
host host1 172.31.250.1
host host2 172.31.250.2
host host3 172.31.250.3
host1$ calicoctl node --ip=172.31.250.1
host2$ calicoctl node --ip=172.31.250.2
host3$ calicoctl node --ip=172.31.250.3
workload host1 a1
workload host1 a3
workload host2 b2
workload host2 b65
workload host3 c
host1$ calicoctl container add a1 192.168.1.1
host1$ calicoctl container add a3 192.168.1.3
host2$ calicoctl container add b2 192.168.1.2
host2$ calicoctl container add b65 192.168.1.65
host3$ calicoctl container add c 192.168.1.129
host1$ calicoctl profile add P
host1$ calicoctl container a1 profile set P
host1$ calicoctl container a3 profile set P
host2$ calicoctl container b2 profile set P
host2$ calicoctl container b65 profile set P
host3$ calicoctl container c profile set P
# The borrowed /32 beats the owner's blackhole and the block route elsewhere.
expect a1 -> b2 icmp allow
expect c -> b2 icmp allow
expect b2 -> a3 icmp allow
expect c -> a1 icmp allow
expect a1 -> b65 icmp allow
expect b65 -> c icmp allow
";

/// What each host's BIRD should have written into its kernel, normalised by [`normalise`].
fn expected() -> BTreeMap<&'static str, BTreeSet<String>> {
    let set = |routes: &[&str]| routes.iter().map(|r| r.to_string()).collect();
    BTreeMap::from([
        (
            "host1",
            set(&[
                "blackhole 192.168.1.0/26",
                "192.168.1.2/32 via 172.31.250.2",
                "192.168.1.64/26 via 172.31.250.2",
                "192.168.1.128/26 via 172.31.250.3",
            ]),
        ),
        (
            "host2",
            set(&[
                "blackhole 192.168.1.64/26",
                "192.168.1.0/26 via 172.31.250.1",
                "192.168.1.128/26 via 172.31.250.3",
            ]),
        ),
        (
            "host3",
            set(&[
                "blackhole 192.168.1.128/26",
                "192.168.1.0/26 via 172.31.250.1",
                "192.168.1.2/32 via 172.31.250.2",
                "192.168.1.64/26 via 172.31.250.2",
            ]),
        ),
    ])
}

/// A route line of `ip route show` (or the simulator's `Display`) as `[blackhole ]<dst>[ via
/// <gw>]`: device, proto, metric and flags dropped, host routes written with their `/32`.
fn normalise(line: &str) -> String {
    let mut out = Vec::new();
    let mut tokens = line.split_whitespace();
    while let Some(token) = tokens.next() {
        match token {
            "dev" | "proto" | "metric" | "scope" | "src" => {
                tokens.next();
            }
            "onlink" => {}
            "blackhole" => out.push(token.to_string()),
            "via" => {
                out.push(token.to_string());
                out.extend(tokens.next().map(str::to_string));
            }
            dst if !dst.contains('/') => out.push(format!("{dst}/32")),
            dst => out.push(dst.to_string()),
        }
    }
    out.join(" ")
}

#[tokio::test]
async fn simulator_installs_one_bird_route_per_remote_block() {
    let lines = scenario::parse(SCENARIO).unwrap();
    let mut runner = Runner::new(Arc::new(MemStore::new()));
    runner
        .run(&lines, |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for (host, want) in expected() {
        let routes: BTreeSet<String> = runner
            .world()
            .host(host)
            .unwrap()
            .dataplane()
            .routes(ROOT_NS)
            .iter()
            .filter(|r| r.proto == RouteProto::Bird)
            .map(|r| normalise(&r.to_string()))
            .collect();
        assert_eq!(routes, want, "{host}");
    }
}

#[tokio::test]
async fn linux_bird_installs_one_route_per_remote_block_and_no_link_duplicate() {
    let Some(config) =
        linux_common::setup("linux_bird_installs_one_route_per_remote_block_and_no_link_duplicate")
    else {
        return;
    };
    let mut runner = LinuxRunner::new(config).unwrap();
    // Every `expect` is a real ping through the aggregated routes.
    linux_common::run_text(&mut runner, SCENARIO).await;
    let cluster = runner.cluster();
    for (host, want) in expected() {
        let ns = cluster.host_netns(host).unwrap();
        let (ok, text) = linux_common::exec(ns, "ip", &["route", "show", "proto", "bird"]);
        assert!(ok, "{host}: ip route show proto bird failed");
        assert!(
            !text.contains("172.31.250.0/24"),
            "{host}: BIRD duplicated the link route:\n{text}"
        );
        let routes: BTreeSet<String> = text.lines().map(normalise).collect();
        assert_eq!(routes, want, "{host}:\n{text}");
    }
}
