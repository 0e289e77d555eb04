//! The seed's four commands verbatim on two hosts sharing one datastore, checking every key
//! and JSON value they write.

mod calicoctl_support;

use calicoctl_support::{keys, store, value, Host};
use serde_json::{json, Value};

async fn json_at(store: &std::sync::Arc<dyn calico_backends::Store>, key: &str) -> Value {
    let text = value(store, key)
        .await
        .unwrap_or_else(|| panic!("{key} missing"));
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn seed_lifecycle_on_two_hosts() {
    let store = store();
    let host1 = Host::new(store.clone(), "host1");
    let host2 = Host::new(store.clone(), "host2");

    // 1. calicoctl node on both hosts.
    host1.ok("node --ip=172.31.250.1").await;
    host2.ok("node --ip=172.31.250.2").await;
    assert_eq!(
        *host1.node.calls.lock().unwrap(),
        ["start host1 172.31.250.1"]
    );
    assert_eq!(
        *host2.node.calls.lock().unwrap(),
        ["start host2 172.31.250.2"]
    );
    assert_eq!(
        value(&store, "/calico/v1/Ready").await.as_deref(),
        Some("true")
    );
    assert_eq!(
        json_at(&store, "/calico/v1/ipam/v4/pool/192.168.0.0-16").await,
        json!({"cidr": "192.168.0.0/16"})
    );
    assert_eq!(
        json_at(&store, "/calico/v1/ipam/v6/pool/fd80:24e2:f998:72d6::-64").await,
        json!({"cidr": "fd80:24e2:f998:72d6::/64"})
    );
    assert_eq!(
        keys(&store, "/calico/v1/ipam/").await.len(),
        2,
        "no duplicate default pools"
    );
    assert_eq!(
        value(&store, "/calico/bgp/v1/global/as_num")
            .await
            .as_deref(),
        Some("64511")
    );
    assert_eq!(
        json_at(&store, "/calico/bgp/v1/global/node_mesh").await,
        json!({"enabled": true})
    );
    for (name, v) in [
        ("InterfacePrefix", "cali"),
        ("LogSeverityFile", "none"),
        ("LogSeverityScreen", "info"),
        ("LogFilePath", "none"),
        ("IpInIpEnabled", "false"),
    ] {
        assert_eq!(
            value(&store, &format!("/calico/v1/config/{name}"))
                .await
                .as_deref(),
            Some(v)
        );
    }
    for (host, ip) in [("host1", "172.31.250.1"), ("host2", "172.31.250.2")] {
        let get = |k: String| {
            let store = store.clone();
            async move { value(&store, &k).await }
        };
        assert_eq!(
            get(format!("/calico/v1/host/{host}/bird_ip"))
                .await
                .as_deref(),
            Some(ip)
        );
        assert_eq!(
            get(format!("/calico/bgp/v1/host/{host}/ip_addr_v4"))
                .await
                .as_deref(),
            Some(ip)
        );
        assert_eq!(
            get(format!("/calico/bgp/v1/host/{host}/ip_addr_v6"))
                .await
                .as_deref(),
            Some("")
        );
        assert_eq!(
            get(format!("/calico/bgp/v1/host/{host}/as_num")).await,
            None
        );
        assert_eq!(
            get(format!(
                "/calico/v1/host/{host}/config/DefaultEndpointToHostAction"
            ))
            .await
            .as_deref(),
            Some("RETURN")
        );
        assert_eq!(
            get(format!("/calico/v1/host/{host}/config/marker"))
                .await
                .as_deref(),
            Some("created")
        );
    }

    // 2. docker run --net=none
    host1.workload("workload_A");
    host2.workload("workload_B");

    // 3. calicoctl container add
    host1.ok("container add workload_A 192.168.1.1").await;
    host2.ok("container add workload_B 192.168.1.2").await;
    let ep_keys = keys(&store, "/calico/v1/host/host1/workload/").await;
    assert_eq!(ep_keys.len(), 1, "{ep_keys:?}");
    let prefix = "/calico/v1/host/host1/workload/docker/workload_A/endpoint/";
    let ep_id = ep_keys[0].strip_prefix(prefix).unwrap().to_string();
    assert_eq!(ep_id.len(), 32);
    let ep = json_at(&store, &ep_keys[0]).await;
    assert_eq!(
        ep,
        json!({
            "state": "active",
            "name": format!("cali{}", &ep_id[..11]),
            "mac": host1.plumbing.mac("workload_A", "eth1").unwrap().to_string(),
            "profile_ids": [],
            "ipv4_nets": ["192.168.1.1/32"],
            "ipv6_nets": [],
            "ipv4_gateway": "172.31.250.1",
            "ipv6_gateway": null,
        })
    );
    let veths = host1.plumbing.veths.lock().unwrap().clone();
    let spec = veths.get(&format!("cali{}", &ep_id[..11])).unwrap();
    assert_eq!(spec.workload_iface, "eth1");
    assert_eq!(spec.temp_iface, format!("tmp{}", &ep_id[..11]));
    assert_eq!(spec.addrs, vec!["192.168.1.1/32".parse().unwrap()]);
    assert_eq!(spec.gateway_v4, Some("172.31.250.1".parse().unwrap()));
    assert_eq!(
        host1.plumbing.addrs("workload_A", "eth1"),
        vec!["192.168.1.1/32".parse().unwrap()]
    );
    assert_eq!(host1.veth_count(), 1);
    // The address is reserved in IPAM under the endpoint's handle, in host1's block.
    let block = json_at(
        &store,
        "/calico/ipam/v2/assignment/ipv4/block/192.168.1.0-26",
    )
    .await;
    assert_eq!(block["affinity"], json!("host:host1"));
    assert_eq!(block["allocations"][1], json!(0));
    assert_eq!(
        block["allocations"][2],
        json!(1),
        "host2 borrowed .2 from the same block"
    );
    assert_eq!(block["attributes"][0]["handle_id"], json!(ep_id));
    assert_eq!(
        json_at(&store, &format!("/calico/ipam/v2/handle/{ep_id}")).await,
        json!({"id": ep_id, "block": {"192.168.1.0/26": 1}})
    );

    // 4. calicoctl profile add PROF_A_B
    host1.ok("profile add PROF_A_B").await;
    assert_eq!(
        json_at(&store, "/calico/v1/policy/profile/PROF_A_B/tags").await,
        json!(["PROF_A_B"])
    );
    assert_eq!(
        json_at(&store, "/calico/v1/policy/profile/PROF_A_B/rules").await,
        json!({
            "id": "PROF_A_B",
            "inbound_rules": [{"action": "allow", "src_tag": "PROF_A_B"}],
            "outbound_rules": [{"action": "allow"}],
        })
    );

    // 5. calicoctl container <C> profile set PROF_A_B
    host1.ok("container workload_A profile set PROF_A_B").await;
    host2.ok("container workload_B profile set PROF_A_B").await;
    assert_eq!(
        json_at(&store, &ep_keys[0]).await["profile_ids"],
        json!(["PROF_A_B"])
    );
    let ep_b = keys(&store, "/calico/v1/host/host2/workload/").await;
    assert_eq!(
        json_at(&store, &ep_b[0]).await["profile_ids"],
        json!(["PROF_A_B"])
    );
    assert_eq!(
        json_at(&store, &ep_b[0]).await["ipv4_gateway"],
        json!("172.31.250.2")
    );
}
