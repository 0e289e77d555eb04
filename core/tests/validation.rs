//! Values a hostile user tried that once got through: each entry point (CLI, `rule update`
//! JSON, a record written straight to etcd) reaches these same checks in core.

use calico_core::model::{AsNumber, IpPool, Rule, Rules};
use calico_core::names::{validate_hostname, validate_name};

#[test]
fn dot_segments_are_not_names() {
    for name in [".", ".."] {
        let err = validate_name("profile", name).unwrap_err().to_string();
        assert!(err.contains("'.' or '..'"), "{err}");
        validate_hostname(name).unwrap_err();
    }
    for bad_host in ["a/b", "../x", ""] {
        validate_hostname(bad_host).unwrap_err();
    }
    validate_name("profile", "...").unwrap();
    validate_hostname("host-1.example").unwrap();
}

#[test]
fn as_zero_is_refused_in_every_spelling() {
    for zero in ["0", "0.0"] {
        let err = zero.parse::<AsNumber>().unwrap_err().to_string();
        assert!(err.contains("AS 0 is reserved"), "{err}");
    }
    let peer = br#"{"ip": "172.31.250.9", "as_num": 0}"#;
    serde_json::from_slice::<calico_core::model::BgpPeer>(peer).unwrap_err();
    assert_eq!("64511".parse::<AsNumber>().unwrap(), AsNumber(64511));
    assert_eq!("1.10".parse::<AsNumber>().unwrap(), AsNumber(65546));
}

#[test]
fn pools_covering_reserved_ranges_are_refused() {
    for (cidr, reserved) in [
        ("0.0.0.0/0", "127.0.0.0/8"),
        ("127.1.0.0/16", "127.0.0.0/8"),
        ("169.254.0.0/24", "169.254.0.0/16"),
        ("224.0.0.0/3", "224.0.0.0/4"),
        ("::/0", "::1/128"),
        ("fe80::/64", "fe80::/10"),
    ] {
        let err = IpPool::new(cidr.parse().unwrap())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains(reserved), "{cidr}: {err}");
    }
    IpPool::new("192.168.0.0/16".parse().unwrap())
        .validate()
        .unwrap();
    IpPool::new("fd80:24e2:f998:72d6::/64".parse().unwrap())
        .validate()
        .unwrap();
}

#[test]
fn icmp_255_is_refused_in_rule_json() {
    for (field, matches) in [
        ("icmp_type", r#""icmp_type": 255"#),
        ("icmp_code", r#""icmp_type": 8, "icmp_code": 255"#),
    ] {
        let json = format!(
            r#"{{"inbound_rules": [{{"action": "allow", "protocol": "icmp", {matches}}}], "outbound_rules": []}}"#
        );
        let mut rules: Rules = serde_json::from_str(&json).unwrap();
        let err = rules.inbound_rules[0].validate().unwrap_err().to_string();
        assert!(err.contains(field) && err.contains("0-254"), "{err}");
    }
    let mut ok: Rule =
        serde_json::from_str(r#"{"action": "allow", "protocol": "icmp", "icmp_type": 254}"#)
            .unwrap();
    ok.validate().unwrap();
}

#[test]
fn rule_insert_positions_are_one_based_and_at_most_one_past_the_end() {
    use calico_core::model::insert_position;
    assert_eq!(insert_position(1, 0), Ok(0));
    assert_eq!(insert_position(1, 3), Ok(0));
    assert_eq!(insert_position(4, 3), Ok(3));
    for bad in [0, -1, 5, 99_999, i64::MIN, i64::MAX] {
        let err = insert_position(bad, 3).unwrap_err().to_string();
        assert!(err.contains(&format!("\"{bad}\"")), "{err}");
        assert!(err.contains("from 1 to 4"), "{err}");
    }
}
