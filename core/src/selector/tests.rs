use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn semantics_follow_the_reference_table() {
    let db = labels(&[("role", "db"), ("tier", "")]);
    let cases = [
        ("role == 'db'", true),
        ("role == \"web\"", false),
        ("role != 'web'", true),
        ("missing != 'x'", true),
        ("role in {'db', 'web'}", true),
        ("missing in {'db'}", false),
        ("role not in {'web',}", true),
        ("missing not in {}", true),
        ("has(tier)", true),
        ("!has(tier)", false),
        ("!!has(tier)", true),
        ("all()", true),
        ("", true),
        ("  \t ", true),
        ("has(x) || role == 'db' && has(tier)", true),
        ("(has(x) || role == 'db') && !has(tier)", false),
        ("!(role == 'db')", false),
    ];
    for (s, want) in cases {
        assert_eq!(sel(s).matches(&db), want, "{s}");
    }
}

#[test]
fn canonical_form_and_id_match_the_original() {
    assert_eq!(
        sel("role == 'frontend'").canonical(),
        "role == \"frontend\""
    );
    assert_eq!(
        sel("role == 'frontend'").unique_id()[..25],
        *"s:lJVGDaqTNzSq4oOWKtH8pYj"
    );
    assert_eq!(
        sel("a == 'x' && !has(b) || c in {'z','y','z'}").canonical(),
        "((a == \"x\" && !has(b)) || c in {\"y\", \"z\"})"
    );
    assert_eq!(sel("v == '\"'").canonical(), "v == '\"'");
    assert_eq!(sel("").canonical(), "all()");
    assert_eq!(sel(" all( ) ").unique_id(), sel("all()").unique_id());
}

#[test]
fn inherited_labels_take_own_then_profiles_then_tags() {
    let own = labels(&[("role", "db")]);
    let p1 = labels(&[("role", "web"), ("zone", "a")]);
    let tags = vec!["PROF".to_string()];
    let profiles = [(Some(&p1), Some(tags.as_slice()))];
    let view = InheritedLabels {
        own: &own,
        profiles: &profiles,
    };
    assert!(sel("role == 'db' && zone == 'a' && has(PROF)").matches(&view));
    assert!(sel("PROF == ''").matches(&view));
}

#[test]
fn errors_name_the_column_and_the_problem() {
    let cases = [
        ("role = 'db'", 6, "lone '='"),
        ("'db' == role", 1, "expected has(..)"),
        ("role ==", 8, "found the end"),
        ("role == 'db' &&", 16, "found the end"),
        ("(has(a)", 8, "expected ')'"),
        ("has(a) has(b)", 8, "after a complete expression"),
        ("role in {'a' 'b'}", 14, "',' or '}'"),
        ("role in 'a'", 9, "expected '{'"),
        ("role == 'db\n", 9, "unterminated"),
        ("a == 'b' @", 10, "'@'"),
    ];
    for (s, column, text) in cases {
        let err = Selector::parse(s).unwrap_err();
        assert_eq!(err.column, column, "{s:?}: {err}");
        assert!(err.to_string().contains(text), "{s:?}: {err}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}has(a){}", "(".repeat(5000), ")".repeat(5000));
    let err = Selector::parse(&deep).unwrap_err();
    assert!(err.reason.contains("nested"), "{err}");
    let nots = format!("{}has(a)", "!".repeat(100_000));
    assert_eq!(sel(&nots).canonical(), "has(a)");
}

#[test]
fn stored_form_is_the_source_verbatim() {
    let s: Selector = serde_json::from_str(r#""role=='db'""#).unwrap();
    assert_eq!(serde_json::to_string(&s).unwrap(), r#""role=='db'""#);
    let err = serde_json::from_str::<Selector>(r#""role='db'""#).unwrap_err();
    assert!(err.to_string().contains("column 5"), "{err}");
}

/// Generates selectors from the grammar, so the fuzz reaches deep into the parser.
fn arb_expr() -> impl Strategy<Value = String> {
    // Labels that start with a keyword (`in`, `not in`) read as the operator, as in the
    // original; the generated ones never do.
    let label = "k[a-z0-9_./-]{0,5}";
    let value = "[a-z0-9\"]{0,3}";
    let leaf = prop_oneof![
        Just("all()".to_string()),
        label.prop_map(|l| format!("has({l})")),
        (label, value).prop_map(|(l, v)| format!("{l} == '{v}'")),
        (label, value).prop_map(|(l, v)| format!("{l} != '{v}'")),
        (label, prop::collection::vec("[a-z0-9]{0,3}", 0..3))
            .prop_map(|(l, vs)| format!("{l} in {{{}}}", quote_all(&vs))),
        (label, prop::collection::vec("[a-z0-9]{0,3}", 0..3))
            .prop_map(|(l, vs)| format!("{l} not in {{{}}}", quote_all(&vs))),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| format!("!{e}")),
            inner.clone().prop_map(|e| format!("({e})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("{a} || {b}")),
        ]
    })
}

fn quote_all(vs: &[String]) -> String {
    vs.iter()
        .map(|v| format!("'{v}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Small label maps over few keys, so selectors hit present and absent labels alike.
fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-c]", "[a-c0-9]{0,2}", 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn parsing_arbitrary_text_never_panics(s in "\\PC{0,40}") {
        let _ = Selector::parse(&s);
    }

    #[test]
    fn parsing_selector_like_text_never_panics(s in "[a-c !=&|(){},'\"\t]{0,40}|(has|in|not|all|[()]| |==|!=|&&|\\|\\||!|'a'|\\{|\\}|,|x){0,20}") {
        if let Err(e) = Selector::parse(&s) {
            // The column lies inside the text or just past its end.
            prop_assert!(e.column >= 1 && e.column <= s.chars().count() + 1, "{s:?}: {e}");
        }
    }

    #[test]
    fn canonical_form_reparses_to_the_same_meaning(s in arb_expr(), labels in arb_labels()) {
        let parsed = Selector::parse(&s).map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
        let canonical = parsed.canonical();
        let again = Selector::parse(&canonical).map_err(|e| TestCaseError::fail(format!("{canonical:?}: {e}")))?;
        prop_assert_eq!(parsed.matches(&labels), again.matches(&labels), "{} vs {}", s, canonical);
        // `!(!x)` prints as `!!x`, which reads back as `x` (as in the original), so the
        // canonical form is a fixed point from the second round on.
        let third = Selector::parse(&again.canonical()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(third.canonical(), again.canonical());
    }
}
