//! Fuzzing the rule grammar (proptest) through `calicoctl profile P rule add`: words from
//! the grammar, hostile strings and arbitrary text never panic it; a refused rule leaves the
//! datastore as it was and says why in one line; an accepted rule adds at most one rule
//! (none when the same rule is there already, as in the original).

mod calicoctl_support;

use calicoctl_support::{dump, store, Host};
use proptest::prelude::*;

const CASES: u32 = 3000;

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "allow", "deny", "tcp", "udp", "icmp", "icmpv6", "from", "to", "tag", "cidr", "ports",
            "type", "code", "not", "T", "P", "10.0.0.0/8", "fd00::/8", "80", "80:90", "1,2,3",
            "65535", "65536", "-1", "0", "255", "256", "--at=1", "--at=0", "--at=-1", "inbound",
            "outbound", "icmp_type", "\"", "-j", "ACCEPT", "a/b", "..", "",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,10}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn no_rule_text_panics_the_grammar_or_half_writes(
        direction in proptest::sample::select(vec!["inbound", "outbound"]),
        words in proptest::collection::vec(word(), 0..9),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let host = Host::new(store(), "h1");
            host.ok("profile add P").await;
            let rules_before = host.ok("profile P rule show").await;
            let before = dump(&host.ctl.store).await;
            let mut args = vec!["profile", "P", "rule", "add", direction];
            args.extend(words.iter().map(String::as_str));
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            match calico_cli::ctl::run(&host.ctl, &args).await {
                Ok(_) => {
                    let after = host.ok("profile P rule show").await;
                    let added = after.lines().count() - rules_before.lines().count();
                    prop_assert!(added <= 1, "{:?} added {} rules:\n{}", words, added, after);
                }
                Err(e) => {
                    prop_assert_eq!(dump(&host.ctl.store).await, before, "{:?} changed the datastore", words);
                    let message = e.to_string();
                    prop_assert!(!message.contains('\n') && !message.is_empty(), "{:?}: {:?}", words, message);
                }
            }
            Ok(())
        })?;
    }
}
