//! Every calicoctl command at least once, checking what it writes and shows.

mod calicoctl_support;

use calicoctl_support::{keys, store, value, Host};
use serde_json::{json, Value};

async fn json_of(h: &Host, line: &str) -> Value {
    serde_json::from_str(&h.ok(line).await).unwrap()
}

#[tokio::test]
async fn node_pool_bgp_and_config_commands() {
    let store = store();
    let h1 = Host::new(store.clone(), "host1");
    let h2 = Host::new(store.clone(), "host2");
    // A pool of each family exists already, so no default pools are created.
    h1.ok("pool add 10.0.0.0/16 --ipip --nat-outgoing").await;
    assert_eq!(
        value(&store, "/calico/v1/config/IpInIpEnabled")
            .await
            .as_deref(),
        Some("true")
    );
    h1.ok("pool add fd00::/64").await;
    h1.ok("node --ip=172.31.250.1 --ip6=fd10::1 --as=1.10")
        .await;
    h2.ok("node --ip 172.31.250.2").await;
    assert_eq!(keys(&store, "/calico/v1/ipam/").await.len(), 2);
    assert_eq!(
        value(&store, "/calico/v1/config/IpInIpEnabled")
            .await
            .as_deref(),
        Some("true"),
        "global defaults never overwrite"
    );
    assert_eq!(
        value(&store, "/calico/bgp/v1/host/host1/as_num")
            .await
            .as_deref(),
        Some("65546")
    );
    assert_eq!(
        value(&store, "/calico/bgp/v1/host/host1/ip_addr_v6")
            .await
            .as_deref(),
        Some("fd10::1")
    );
    // Re-running node without --as deletes the per-host AS.
    h1.ok("node --ip=172.31.250.1 --ip6=fd10::1").await;
    assert_eq!(
        value(&store, "/calico/bgp/v1/host/host1/as_num").await,
        None
    );

    let show = h1.ok("node show").await;
    assert!(
        show.contains("host1") && show.contains("(inherited)"),
        "{show}"
    );
    h1.ok("node bgp peer add 172.31.9.9 as 65001").await;
    assert_eq!(
        serde_json::from_str::<Value>(
            &value(&store, "/calico/bgp/v1/host/host1/peer_v4/172.31.9.9")
                .await
                .unwrap()
        )
        .unwrap(),
        json!({"ip": "172.31.9.9", "as_num": "65001"})
    );
    assert!(h1
        .ok("node bgp peer show --ipv4")
        .await
        .contains("172.31.9.9"));
    assert!(!h1
        .ok("node bgp peer show --ipv6")
        .await
        .contains("172.31.9.9"));
    let nodes = json_of(&h1, "node show -o json").await;
    assert_eq!(nodes[0]["peers"][0]["ip"], json!("172.31.9.9"));
    h1.ok("node bgp peer remove 172.31.9.9").await;

    let pools = h1.ok("pool show").await;
    assert!(
        pools.contains("10.0.0.0/16") && pools.contains("ipip,nat-outgoing"),
        "{pools}"
    );
    let v6 = h1.ok("pool show --ipv6").await;
    assert!(
        v6.contains("fd00::/64") && !v6.contains("10.0.0.0/16"),
        "{v6}"
    );
    let pj = json_of(&h1, "pool show --output=json").await;
    assert_eq!(pj.as_array().unwrap().len(), 2);
    h1.ok("pool range add 10.1.0.0 10.1.0.255").await;
    assert!(h1.ok("pool show --ipv4").await.contains("10.1.0.0/24"));
    h1.ok("pool remove 10.1.0.0/24").await;

    h1.ok("bgp peer add fd00::9 as 65002").await;
    assert!(keys(&store, "/calico/bgp/v1/global/peer_v6/")
        .await
        .contains(&"/calico/bgp/v1/global/peer_v6/fd00::9".to_string()));
    assert!(h1.ok("bgp peer show").await.contains("fd00::9"));
    h1.ok("bgp peer remove fd00::9").await;
    assert_eq!(h1.ok("bgp node-mesh").await, "on\n");
    h1.ok("bgp node-mesh off").await;
    assert_eq!(
        value(&store, "/calico/bgp/v1/global/node_mesh")
            .await
            .as_deref(),
        Some(r#"{"enabled":false}"#)
    );
    assert_eq!(
        json_of(&h1, "bgp node-mesh -o json").await,
        json!({"enabled": false})
    );
    assert_eq!(h1.ok("bgp default-node-as").await, "64511\n");
    h1.ok("bgp default-node-as 65100").await;
    assert_eq!(h1.ok("bgp default-node-as").await, "65100\n");

    h1.ok("config felix loglevel debug").await;
    assert_eq!(
        value(&store, "/calico/v1/config/LogSeverityScreen")
            .await
            .as_deref(),
        Some("debug")
    );
    assert_eq!(h1.ok("config felix loglevel").await, "debug\n");
    h1.ok("config felix ReportingIntervalSecs 0 --force").await;
    assert_eq!(
        value(&store, "/calico/v1/config/ReportingIntervalSecs")
            .await
            .as_deref(),
        Some("0")
    );
    h1.ok("config felix ReportingIntervalSecs --remove --force")
        .await;
    assert_eq!(
        value(&store, "/calico/v1/config/ReportingIntervalSecs").await,
        None
    );
    // The failsafe lists are known names, checked in Felix's format unless forced.
    h1.ok("config felix FailsafeOutboundHostPorts tcp:2379,udp:53")
        .await;
    assert_eq!(
        value(&store, "/calico/v1/config/FailsafeOutboundHostPorts")
            .await
            .as_deref(),
        Some("tcp:2379,udp:53")
    );
    h1.fails(
        &["config", "felix", "FailsafeInboundHostPorts", "ssh:22"],
        "ssh:22",
    )
    .await;
    assert_eq!(
        value(&store, "/calico/v1/config/FailsafeInboundHostPorts").await,
        None
    );
    h1.ok("config bgp loglevel debug").await;
    assert_eq!(
        value(&store, "/calico/bgp/v1/global/loglevel")
            .await
            .as_deref(),
        Some("debug")
    );
    h1.ok("config node bgp loglevel none").await;
    assert_eq!(
        value(&store, "/calico/bgp/v1/host/host1/loglevel")
            .await
            .as_deref(),
        Some("none")
    );

    let status = h1.ok("status").await;
    assert!(status.starts_with("calico-node is running"), "{status}");
    assert_eq!(json_of(&h1, "status -o json").await["running"], json!(true));
    assert!(h1.ok("version").await.starts_with("calicoctl "));
    assert!(h1.ok("help").await.contains("Usage:\n  calicoctl"));
    h2.ok("node stop").await;
    assert_eq!(
        h2.node.calls.lock().unwrap().last().map(String::as_str),
        Some("stop")
    );
    h2.ok("node remove").await;
    assert_eq!(
        keys(&store, "/calico/bgp/v1/host/host2/").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn container_endpoint_profile_and_ipam_commands() {
    let store = store();
    let h1 = Host::new(store.clone(), "host1");
    h1.ok("node --ip=172.31.250.1 --ip6=fd10::1").await;
    for w in ["w_auto", "w_v6", "w_pool", "w_eth0"] {
        h1.workload(w);
    }
    h1.ok("container add w_auto ipv4").await;
    h1.ok("pool add 10.7.0.0/24").await;
    h1.ok("container add w_v6 ipv6").await;
    h1.ok("container add w_pool 10.7.0.0/24").await;
    h1.ok("container add w_eth0 192.168.3.3 --interface=eth0")
        .await;
    let eps = json_of(&h1, "endpoint show -o json").await;
    let eps = eps.as_array().unwrap();
    assert_eq!(eps.len(), 4);
    let by = |w: &str| {
        eps.iter()
            .find(|e| e["workload_id"] == json!(w))
            .unwrap()
            .clone()
    };
    assert_eq!(
        by("w_auto")["endpoint"]["ipv4_nets"],
        json!(["192.168.0.0/32"])
    );
    assert_eq!(
        by("w_v6")["endpoint"]["ipv6_nets"],
        json!(["fd80:24e2:f998:72d6::/128"])
    );
    assert_eq!(by("w_v6")["endpoint"]["ipv6_gateway"], json!("fd10::1"));
    assert_eq!(
        by("w_pool")["endpoint"]["ipv4_nets"],
        json!(["10.7.0.0/32"])
    );
    let eth0 = h1
        .plumbing
        .veths
        .lock()
        .unwrap()
        .values()
        .any(|s| s.workload_iface == "eth0");
    assert!(eth0);

    let summary = h1.ok("endpoint show").await;
    assert!(
        summary.contains("host1") && summary.contains("4"),
        "{summary}"
    );
    let detailed = h1.ok("endpoint show --detailed --workload=w_pool").await;
    assert!(
        detailed.contains("10.7.0.0/32") && !detailed.contains("w_auto"),
        "{detailed}"
    );
    let show = h1.ok("container w_pool endpoint show").await;
    assert!(show.contains("10.7.0.0/32"), "{show}");

    h1.ok("profile add P1").await;
    h1.ok("profile add P2").await;
    h1.ok("container w_auto profile set P1").await;
    h1.ok("container w_auto profile append P2").await;
    assert_eq!(
        h1.ok("container w_auto profile show").await,
        "Name\nP1\nP2\n"
    );
    h1.ok("container w_auto profile remove P1").await;
    assert_eq!(
        json_of(&h1, "container w_auto profile show -o json").await,
        json!(["P2"])
    );
    h1.ok("container w_auto profile set").await;
    assert_eq!(
        json_of(&h1, "container w_auto profile show -o json").await,
        json!([])
    );
    let ep_id = by("w_pool")["endpoint_id"].as_str().unwrap().to_string();
    h1.ok(&format!("endpoint {ep_id} profile append P1 --host=host1"))
        .await;
    assert_eq!(
        json_of(&h1, &format!("endpoint {ep_id} profile show -o json")).await,
        json!(["P1"])
    );
    let ps = h1.ok("profile show").await;
    assert_eq!(ps, "Name\nP1\nP2\n");
    let detailed = h1.ok("profile show --detailed").await;
    assert!(detailed.contains(&ep_id), "{detailed}");

    h1.ok("profile P1 tag add web").await;
    assert_eq!(h1.ok("profile P1 tag show").await, "P1\nweb\n");
    h1.ok("profile P1 tag remove web").await;
    assert_eq!(
        json_of(&h1, "profile P1 tag show -o json").await,
        json!(["P1"])
    );

    h1.ok_args(&[
        "profile", "P1", "rule", "add", "inbound", "--at=1", "allow", "tcp", "to", "ports", "80",
    ])
    .await;
    h1.ok("profile P1 rule add outbound deny icmp type 8").await;
    // --at=2 inserts at position 2 (the original also took --at=0 to mean before the last).
    h1.ok("profile P1 rule add inbound --at=2 deny from cidr 10.0.0.0/8")
        .await;
    let shown = h1.ok("profile P1 rule show").await;
    assert_eq!(
        shown,
        "Inbound rules:\n   1 allow tcp to ports 80\n   2 deny from cidr 10.0.0.0/8\n   3 allow from tag P1\nOutbound rules:\n   1 allow\n   2 deny icmp type 8\n"
    );
    h1.ok("profile P1 rule remove inbound allow tcp to ports 80")
        .await;
    h1.ok("profile P1 rule remove outbound --at=2").await;
    let rules = json_of(&h1, "profile P1 rule json").await;
    assert_eq!(
        rules,
        json!({"id": "P1",
               "inbound_rules": [{"action": "deny", "src_net": "10.0.0.0/8"},
                                 {"action": "allow", "src_tag": "P1"}],
               "outbound_rules": [{"action": "allow"}]})
    );
    h1.with_input(
        "profile P1 rule update",
        r#"{"id":"P1","inbound_rules":[{"action":"allow","protocol":"udp","dst_ports":["1000:2000"]}],"outbound_rules":[]}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        h1.ok("profile P1 rule show").await,
        "Inbound rules:\n   1 allow udp to ports 1000:2000\nOutbound rules:\n"
    );

    let info = h1.ok("ipam info 10.7.0.0").await;
    assert!(
        info.contains("is assigned") && info.contains(&ep_id),
        "{info}"
    );
    let ij = json_of(&h1, "ipam info 10.7.0.0 -o json").await;
    assert_eq!(ij["handle_id"], json!(ep_id));

    h1.ok("container w_pool ip add 10.7.0.9").await;
    assert!(h1
        .ok("container w_pool endpoint show")
        .await
        .contains("10.7.0.9/32"));
    assert!(h1
        .plumbing
        .addrs("w_pool", "eth1")
        .contains(&"10.7.0.9/32".parse().unwrap()));
    h1.ok("container w_pool ip remove 10.7.0.9").await;
    assert!(h1
        .ok("ipam info 10.7.0.9")
        .await
        .contains("not currently assigned"));
    assert_eq!(
        h1.plumbing.addrs("w_pool", "eth1"),
        vec!["10.7.0.0/32".parse().unwrap()]
    );

    h1.ok("profile remove P1 --no-check").await;
    assert_eq!(
        keys(&store, "/calico/v1/policy/profile/P1/").await,
        Vec::<String>::new()
    );

    h1.ok("container remove w_pool").await;
    assert!(h1
        .ok("ipam info 10.7.0.0")
        .await
        .contains("not currently assigned"));
    assert_eq!(
        keys(&store, &format!("/calico/ipam/v2/handle/{ep_id}")).await,
        Vec::<String>::new()
    );
    assert_eq!(h1.veth_count(), 3);
    h1.ok("ipam release 192.168.3.3").await;
    assert!(h1
        .ok("ipam info 192.168.3.3")
        .await
        .contains("not currently assigned"));
}

#[tokio::test]
async fn overlay_pools_give_every_host_a_tunnel_address() {
    let store = store();
    let h1 = Host::new(store.clone(), "host1");
    let h2 = Host::new(store.clone(), "host2");
    let h3 = Host::new(store.clone(), "host3");
    h1.ok("node --ip=172.31.250.1").await;
    h2.ok("node --ip=172.31.250.2").await;
    let added = h1.ok("pool add 10.9.0.0/16 --vxlan").await;
    assert!(
        added.contains("Assigned vxlan.calico address") && added.contains("to host2"),
        "{added}"
    );
    let vtep = |host: &'static str| {
        let store = store.clone();
        async move {
            let raw = value(&store, &format!("/calico/v1/host/{host}/vtep"))
                .await
                .unwrap_or_else(|| panic!("{host} has no VTEP"));
            serde_json::from_str::<serde_json::Value>(&raw).unwrap()
        }
    };
    let (v1, v2) = (vtep("host1").await, vtep("host2").await);
    let ip1: std::net::Ipv4Addr = v1["ip"].as_str().unwrap().parse().unwrap();
    assert_eq!(ip1.octets()[..2], [10, 9], "{v1}");
    assert_ne!(v1["ip"], v2["ip"]);
    assert_ne!(v1["mac"], v2["mac"]);
    // A host registered later gets its own; adding the pool again changes nobody's.
    h3.ok("node --ip=172.31.250.3").await;
    assert!(vtep("host3").await["ip"].is_string());
    h1.ok("pool add 10.9.0.0/16 --vxlan").await;
    assert_eq!(vtep("host1").await, v1);
    assert!(h1.ok("pool show").await.contains("vxlan"));

    h1.ok("pool add 10.8.0.0/16 --ipip").await;
    for host in ["host1", "host2", "host3"] {
        let addr = value(
            &store,
            &format!("/calico/v1/host/{host}/config/IpInIpTunnelAddr"),
        )
        .await
        .unwrap_or_else(|| panic!("{host} has no IpInIpTunnelAddr"));
        assert!(addr.starts_with("10.8."), "{host}: {addr}");
    }
    // Tunnel addresses follow the pools: a removed pool, or one that loses its overlay,
    // gives its addresses back to IPAM and their records go; so does a removed node.
    let tunl1 = value(&store, "/calico/v1/host/host1/config/IpInIpTunnelAddr")
        .await
        .unwrap();
    let removed = h1.ok("pool remove 10.8.0.0/16").await;
    assert!(
        removed.contains(&format!("Released tunl0 address {tunl1} from host1")),
        "{removed}"
    );
    for host in ["host1", "host2", "host3"] {
        let key = format!("/calico/v1/host/{host}/config/IpInIpTunnelAddr");
        assert_eq!(value(&store, &key).await, None, "{key}");
    }
    assert!(h1
        .ok(&format!("ipam info {tunl1}"))
        .await
        .contains("not currently assigned"));
    let vtep3 = vtep("host3").await["ip"].as_str().unwrap().to_string();
    h3.ok("node stop").await;
    h3.ok("node remove").await;
    assert!(h1
        .ok(&format!("ipam info {vtep3}"))
        .await
        .contains("not currently assigned"));
    let plain = h1.ok("pool add 10.9.0.0/16").await;
    assert!(
        plain.contains(&format!(
            "Released vxlan.calico address {} from host1",
            v1["ip"].as_str().unwrap()
        )),
        "{plain}"
    );
    assert_eq!(value(&store, "/calico/v1/host/host2/vtep").await, None);

    h1.fails(&["pool", "add", "fd00:9::/64", "--vxlan"], "fd00:9::/64")
        .await;
    h1.fails(
        &["pool", "add", "10.7.0.0/16", "--vxlan", "--ipip"],
        "10.7.0.0/16",
    )
    .await;
}
