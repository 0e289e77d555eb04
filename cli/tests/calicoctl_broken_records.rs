//! One undecodable record no longer hides the rest: `show` commands list every good row,
//! mark the broken key after them (as text and as JSON), and fail only with `--strict`.

mod calicoctl_support;

use calicoctl_support::{keys, store, Host};

const GARBAGE: &[u8] = b"garbage\r{";

async fn cluster_with_broken_records() -> (Host, String, String, String) {
    let h1 = Host::new(store(), "host1");
    h1.ok("node --ip=172.31.250.1").await;
    for (workload, ip) in [("workload_A", "192.168.1.1"), ("workload_B", "192.168.1.2")] {
        h1.workload(workload);
        h1.ok(&format!("container add {workload} {ip}")).await;
    }
    h1.ok("profile add PROF_GOOD").await;
    h1.ok("profile add PROF_BAD").await;
    h1.ok("container workload_A profile set PROF_GOOD").await;
    h1.ok("pool add 10.77.0.0/16").await;

    let endpoint = keys(&h1.ctl.store, "/calico/v1/host/host1/workload/")
        .await
        .into_iter()
        .find(|k| k.contains("workload_B") && k.contains("/endpoint/"))
        .expect("workload_B's endpoint key");
    let rules = "/calico/v1/policy/profile/PROF_BAD/rules".to_string();
    let pool = "/calico/v1/ipam/v4/pool/10.77.0.0-16".to_string();
    for key in [&endpoint, &rules, &pool] {
        h1.ctl.store.put(key, GARBAGE.to_vec()).await.unwrap();
    }
    (h1, endpoint, rules, pool)
}

#[tokio::test]
async fn show_commands_list_good_rows_and_mark_broken_keys() {
    let (h1, endpoint, rules, pool) = cluster_with_broken_records().await;

    let out = h1.ok("endpoint show --detailed").await;
    assert!(out.contains("workload_A"), "{out}");
    assert!(out.contains(&format!("BROKEN {endpoint}:")), "{out}");
    assert!(
        !out.contains('\r'),
        "control characters are escaped: {out:?}"
    );

    let out = h1.ok("profile show --detailed").await;
    assert!(out.contains("PROF_GOOD"), "{out}");
    assert!(out.contains(&format!("BROKEN {rules}:")), "{out}");
    assert!(out.contains(&format!("BROKEN {endpoint}:")), "{out}");

    let out = h1.ok("pool show").await;
    assert!(out.contains("192.168.0.0/16"), "{out}");
    assert!(out.contains(&format!("BROKEN {pool}:")), "{out}");

    let json: serde_json::Value = serde_json::from_str(&h1.ok("pool show -o json").await).unwrap();
    let items = json.as_array().unwrap();
    assert!(
        items.iter().any(|i| i["cidr"] == "192.168.0.0/16"),
        "{json}"
    );
    assert!(
        items
            .iter()
            .any(|i| i["key"] == pool.as_str() && i["broken"].is_string()),
        "{json}"
    );
}

#[tokio::test]
async fn strict_show_fails_naming_the_broken_key() {
    let (h1, endpoint, rules, pool) = cluster_with_broken_records().await;
    for (line, key) in [
        ("endpoint show --strict", &endpoint),
        ("profile show --detailed --strict", &rules),
        ("pool show --strict", &pool),
    ] {
        let err = h1.try_run(line).await.unwrap_err().to_string();
        assert!(err.contains(key.as_str()), "{line}: {err}");
    }
}
