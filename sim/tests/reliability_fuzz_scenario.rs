//! Fuzzing the scenario parser (proptest): lines built from the grammar's own words, hostile
//! strings and arbitrary text never panic it, and an error names a line that exists.

use calico_sim::scenario::parse;
use proptest::prelude::*;

const CASES: u32 = 3000;

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "host",
            "workload",
            "external",
            "expect",
            "settle",
            "->",
            "allow",
            "deny",
            "icmp",
            "tcp/80",
            "udp/53",
            "tcp/",
            "tcp/99999",
            "icmp/8/0",
            "host1",
            "host1$",
            "host1$!",
            "calicoctl",
            "node",
            "--ip=172.31.250.1",
            "172.31.250.1",
            "fd00::1",
            "<<EOF",
            "EOF",
            "#",
            "\"",
            "'",
            "\\",
            "$",
            "!",
            "192.168.1.1",
            "a",
        ])
        .prop_map(str::to_owned),
        ".{0,12}",
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(word(), 0..8).prop_map(|w| w.join(" ")),
        ".{0,60}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn no_text_panics_the_scenario_parser(lines in proptest::collection::vec(line(), 0..12)) {
        let text = lines.join("\n");
        if let Err(e) = parse(&text) {
            prop_assert!(e.line >= 1 && e.line <= text.lines().count().max(1), "line {} of\n{}", e.line, text);
        }
    }
}
