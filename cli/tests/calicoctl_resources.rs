//! calicoctl 1.x resource files: create/apply/replace/delete -f, get, delete KIND NAME, and
//! what they store in the v1 layout; bad files name the document, field and line and write
//! nothing.

mod calicoctl_support;

use calicoctl_support::{dump, store, value, Host};

const TWO_POLICIES: &str = "\
apiVersion: v1
kind: policy
metadata:
  name: db-from-web
spec:
  order: 10
  selector: role == 'db'
  ingress:
  - action: allow
    protocol: tcp
    source:
      selector: role == 'web'
    destination:
      ports: [5432]
---
apiVersion: v1
kind: policy
metadata:
  name: deny-rest
spec:
  order: 20
  selector: role == 'db'
  ingress:
  - action: deny
";

#[tokio::test]
async fn policies_from_a_multi_document_file_land_in_the_v1_layout() {
    let store = store();
    let h = Host::new(store.clone(), "host1");
    let out = h.with_input("create -f -", TWO_POLICIES).await.unwrap();
    assert_eq!(out, "Successfully created 2 'policy' resource(s)\n");
    let stored = value(&store, "/calico/v1/policy/tier/default/policy/db-from-web")
        .await
        .unwrap();
    assert_eq!(
        stored,
        r#"{"order":10,"inbound_rules":[{"action":"allow","protocol":"tcp","src_selector":"role == 'web'","dst_ports":[5432]}],"selector":"role == 'db'"}"#
    );
    let err = h.with_input("create -f -", TWO_POLICIES).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "resource already exists: Policy(name=db-from-web)"
    );
    let out = h.with_input("apply -f -", TWO_POLICIES).await.unwrap();
    assert_eq!(out, "Successfully applied 2 'policy' resource(s)\n");

    // get: a table, and YAML that is valid input again.
    assert_eq!(h.ok("get policy").await, "NAME\ndb-from-web\ndeny-rest\n\n");
    let yaml = h.ok("get pol db-from-web -o yaml").await;
    assert!(yaml.contains("selector: role == 'web'"), "{yaml}");
    h.with_input("replace -f -", &yaml).await.unwrap();
    let json = h.ok("get policies -o json").await;
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 2);

    assert_eq!(
        h.ok("delete policy deny-rest").await,
        "Successfully deleted 1 'policy' resource(s)\n"
    );
    let err = h.try_run("delete policy deny-rest").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "resource does not exist: Policy(name=deny-rest)"
    );
    let out = h.with_input("delete -f -", &yaml).await.unwrap();
    assert_eq!(out, "Successfully deleted 1 'policy' resource(s)\n");
    assert!(dump(&store)
        .await
        .iter()
        .all(|(k, _)| !k.contains("/policy/tier/")));
}

#[tokio::test]
async fn every_kind_round_trips_through_get() {
    let store = store();
    let h = Host::new(store.clone(), "host1");
    let file = "\
- apiVersion: v1
  kind: profile
  metadata: {name: web, tags: [web], labels: {tier: front}}
  spec:
    ingress:
    - {action: deny, notProtocol: udp, source: {notNet: 10.1.2.0/24}}
    - {action: deny, protocol: tcp, destination: {notPorts: [22, 8000]}}
    - {action: allow, protocol: icmp, notICMP: {type: 8, code: 0}}
    - {action: allow, source: {tag: web}}
    egress: [{action: allow}]
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: eth0, workload: w1, orchestrator: k8s, node: host1, labels: {role: web}}
  spec:
    ipNetworks: [192.168.0.5/32]
    profiles: [web]
    interfaceName: cali0ef24ba
    mac: ca:fe:1d:52:bb:e9
- apiVersion: v1
  kind: hostEndpoint
  metadata: {name: eth0, node: host1, labels: {role: edge}}
  spec: {interfaceName: eth0, expectedIPs: [172.31.250.1]}
- apiVersion: v1
  kind: ipPool
  metadata: {cidr: 10.1.0.0/16}
  spec: {ipip: {enabled: true}, nat-outgoing: true}
- apiVersion: v1
  kind: bgpPeer
  metadata: {scope: node, node: host1, peerIP: 172.31.250.9}
  spec: {asNumber: 64567}
- apiVersion: v1
  kind: node
  metadata: {name: host1}
  spec: {bgp: {ipv4Address: 172.31.250.1/24, asNumber: 64512}}
";
    let out = h.with_input("apply -f -", file).await.unwrap();
    // The IPIP pool gives the registered host its tunnel address, as `pool add --ipip` does.
    assert_eq!(
        out,
        "Successfully applied 6 resource(s)\nAssigned tunl0 address 10.1.0.0 to host1\n"
    );
    let expect = [
        ("/calico/v1/host/host1/config/IpInIpTunnelAddr", "10.1.0.0"),
        (
            "/calico/v1/policy/profile/web/labels",
            r#"{"tier":"front"}"#,
        ),
        ("/calico/v1/policy/profile/web/tags", r#"["web"]"#),
        (
            "/calico/v1/policy/profile/web/rules",
            r#"{"id":"web","inbound_rules":[{"action":"deny","!protocol":"udp","!src_net":"10.1.2.0/24"},{"action":"deny","protocol":"tcp","!dst_ports":[22,8000]},{"action":"allow","protocol":"icmp","!icmp_type":8,"!icmp_code":0},{"action":"allow","src_tag":"web"}],"outbound_rules":[{"action":"allow"}]}"#,
        ),
        (
            "/calico/v1/host/host1/workload/k8s/w1/endpoint/eth0",
            r#"{"state":"active","name":"cali0ef24ba","mac":"ca:fe:1d:52:bb:e9","profile_ids":["web"],"ipv4_nets":["192.168.0.5/32"],"ipv6_nets":[],"labels":{"role":"web"},"ipv4_gateway":null,"ipv6_gateway":null}"#,
        ),
        (
            "/calico/v1/host/host1/endpoint/eth0",
            r#"{"name":"eth0","expected_ipv4_addrs":["172.31.250.1"],"labels":{"role":"edge"}}"#,
        ),
        ("/calico/v1/config/IpInIpEnabled", "true"),
        (
            "/calico/bgp/v1/host/host1/peer_v4/172.31.250.9",
            r#"{"ip":"172.31.250.9","as_num":"64567"}"#,
        ),
        ("/calico/bgp/v1/host/host1/ip_addr_v4", "172.31.250.1"),
        // The prefix is the host's subnet (calico 2.1+ `network_v4`).
        ("/calico/bgp/v1/host/host1/network_v4", "172.31.250.0/24"),
        ("/calico/bgp/v1/host/host1/as_num", "64512"),
        ("/calico/v1/host/host1/bird_ip", "172.31.250.1"),
    ];
    for (key, want) in expect {
        assert_eq!(value(&store, key).await.as_deref(), Some(want), "{key}");
    }
    // What get prints is input again: applying it all back changes nothing.
    let before = dump(&store).await;
    for kind in ["profile", "wep", "hep", "ippool", "bgppeer", "node"] {
        let yaml = h.ok(&format!("get {kind} -o yaml")).await;
        h.with_input("apply -f -", &yaml)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}\n{yaml}"));
    }
    assert_eq!(dump(&store).await, before);
    assert!(
        h.ok("get node host1 -o yaml")
            .await
            .contains("ipv4Address: 172.31.250.1/24"),
        "the node's address reads back with its prefix"
    );
    assert_eq!(
        h.ok("get hostEndpoint --node=host1").await,
        "NODE   NAME\nhost1  eth0\n\n"
    );
    // -o wide: calicoctl 1.x's extra columns.
    assert_eq!(
        h.ok("get hostEndpoint -o wide").await,
        "NODE   NAME  INTERFACE  IPS           PROFILES\nhost1  eth0  eth0       172.31.250.1\n\n"
    );
    assert_eq!(h.ok("get wep -o wide").await, "NODE   ORCHESTRATOR  WORKLOAD  NAME  NETWORKS        NATS  INTERFACE    PROFILES\nhost1  k8s           w1        eth0  192.168.0.5/32        cali0ef24ba  web\n\n");
    assert_eq!(
        h.ok("get ippool -o wide").await,
        "CIDR         NAT   IPIP\n10.1.0.0/16  true  true\n\n"
    );
    assert_eq!(
        h.ok("get profile -o wide").await,
        "NAME  TAGS\nweb   web\n\n"
    );
    // A node without its own AS shows the inherited one in parentheses.
    h.with_input(
        "apply -f -",
        "{apiVersion: v1, kind: node, metadata: {name: host2}, spec: {bgp: {ipv4Address: 172.31.250.2}}}",
    )
    .await
    .unwrap();
    assert_eq!(h.ok("get node -o wide").await, "NAME   ASN      IPV4             IPV6\nhost1  64512    172.31.250.1/24\nhost2  (64511)  172.31.250.2\n\n");
    h.fails(&["delete", "hostEndpoint", "eth0"], "--node").await;
    h.ok("delete hostEndpoint eth0 --node=host1").await;
    assert_eq!(
        value(&store, "/calico/v1/host/host1/endpoint/eth0").await,
        None
    );
}

#[tokio::test]
async fn bad_files_name_document_field_and_line_and_write_nothing() {
    let store = store();
    let h = Host::new(store.clone(), "host1");
    let cases = [
        (
            // The second document's selector is invalid: the first is not written either.
            format!("{TWO_POLICIES}  selector: role = 'x'\n")
                .replace("  ingress:\n  - action: deny\n  selector", "  selectorx"),
            "document 2",
        ),
        (
            "apiVersion: v1\nkind: policy\nmetadata: {name: p}\nspec:\n  selector: \"role = 'db'\"\n"
                .to_string(),
            "column 6",
        ),
        (
            "apiVersion: v1\nkind: hostEndpoint\nmetadata: {name: e, node: h}\nspec:\n  interface: eth0\n"
                .to_string(),
            "unknown field `interface`",
        ),
        (
            "apiVersion: v1\nkind: hostEndpoint\nmetadata: {name: e, node: h}\nspec: {profiles: [a]}\n"
                .to_string(),
            "no interface or expected IPs",
        ),
        (
            "apiVersion: v2\nkind: policy\nmetadata: {name: p}\nspec: {}\n".to_string(),
            "Unknown resource type (policy) and/or version (v2)",
        ),
        ("# nothing\n".to_string(), "No resources specified in file"),
        (
            "apiVersion: v1\nkind: policy\nmetadata: {name: p}\nspec:\n  ingress: [{action: pass}]\n"
                .to_string(),
            "spec.ingress[0]",
        ),
    ];
    for (file, needle) in cases {
        let err = h.with_input("create -f -", &file).await.unwrap_err();
        assert!(err.to_string().contains(needle), "{needle}: {err}\n{file}");
        assert!(
            dump(&store).await.is_empty(),
            "{needle}: something was written"
        );
    }
    // The line of the fault is the file's, not the document's.
    let file = format!("{TWO_POLICIES}---\napiVersion: v1\nkind: policy\nmetadata: {{name: p}}\nspec: {{bogus: 1}}\n");
    let err = h
        .with_input("apply -f -", &file)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("document 3: policy: spec: unknown field `bogus`"),
        "{err}"
    );
    assert!(err.contains("(line 29,"), "{err}");
    let file = "apiVersion: v1\nkind: policy\nmetadata: {name: p}\nspec:\n  ingress:\n  - action: allow\n    source: {selector: \"a ==\"}\n";
    let err = h
        .with_input("apply -f -", file)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "document 1: policy: spec.ingress[0].source: invalid selector \"a ==\": column 5: \
         expected a quoted string, found the end (line 7, column 13)"
    );
}

#[tokio::test]
async fn container_label_add_and_remove_edit_the_endpoint() {
    let store = store();
    let h = Host::new(store.clone(), "host1");
    h.ok("node --ip=172.31.250.1").await;
    h.workload("workload_A");
    h.ok("container add workload_A 192.168.1.1").await;
    let labels = || async {
        let (key, json) = dump(&store)
            .await
            .into_iter()
            .find(|(k, _)| k.contains("/workload/"))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        (key, v.get("labels").cloned())
    };
    assert_eq!(labels().await.1, None);
    let out = h.ok("container workload_A label add role=web").await;
    assert!(out.starts_with("Label role=web set on endpoint"), "{out}");
    assert_eq!(labels().await.1, Some(serde_json::json!({"role": "web"})));
    h.fails(
        &["container", "workload_A", "label", "add", "role=a b"],
        "label value",
    )
    .await;
    h.fails(
        &["container", "workload_A", "label", "add", "role"],
        "KEY=VALUE",
    )
    .await;
    h.ok("container workload_A label remove role").await;
    assert_eq!(labels().await.1, None);
    let out = h.ok("container workload_A label remove role").await;
    assert!(out.contains("has no label role"), "{out}");
    // The label is a selector's input: a policy applied by file now selects nothing here.
    let yaml = h.ok("get workloadEndpoint -o yaml").await;
    assert!(!yaml.contains("labels"), "{yaml}");
}

#[tokio::test]
async fn a_vxlan_pool_round_trips_and_refuses_ipip_beside_it() {
    let store = store();
    let h = Host::new(store.clone(), "host1");
    let pool = "apiVersion: v1\nkind: ipPool\nmetadata: {cidr: 10.2.0.0/16}\nspec: {vxlan: {enabled: true}}\n";
    h.with_input("apply -f -", pool).await.unwrap();
    let stored = value(&store, "/calico/v1/ipam/v4/pool/10.2.0.0-16").await;
    assert!(
        stored
            .as_deref()
            .is_some_and(|v| v.contains(r#""vxlan":true"#)),
        "{stored:?}"
    );
    let yaml = h.ok("get ippool -o yaml").await;
    assert!(
        yaml.contains("vxlan:") && yaml.contains("enabled: true"),
        "{yaml}"
    );
    let both = "apiVersion: v1\nkind: ipPool\nmetadata: {cidr: 10.3.0.0/16}\nspec: {vxlan: {enabled: true}, ipip: {enabled: true}}\n";
    let before = dump(&store).await;
    let err = h.with_input("apply -f -", both).await.unwrap_err();
    assert!(err.to_string().contains("spec.vxlan"), "{err}");
    assert_eq!(dump(&store).await, before, "nothing written");
}
