//! Every scenario of the shipped corpus passes on the simulator, and the demo narrates the
//! seed to its end; a scenario with a wrong expectation fails at that line.

use std::sync::Arc;

use calico_backends::{MemStore, SledStore, Store};
use calico_sim::scenario::{self, Runner, ScenarioError, ScenarioTarget};

async fn run(text: &str) -> Result<Vec<String>, ScenarioError> {
    let lines = scenario::parse(text).unwrap();
    let mut runner = Runner::new(Arc::new(MemStore::new()));
    let mut seen = Vec::new();
    runner
        .run(&lines, |r| seen.push(format!("{} {}", r.line, r.detail)))
        .await?;
    Ok(seen)
}

#[tokio::test]
async fn the_shipped_corpus_passes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 8, "corpus went missing: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if let Err(err) = run(&text).await {
            panic!("{}: {err}", file.display());
        }
    }
}

#[tokio::test]
async fn a_wrong_expectation_fails_at_its_line_with_the_walk() {
    let text = "host h1 172.31.250.1\nh1$ calicoctl node --ip=172.31.250.1\n\
                workload h1 a\nworkload h1 b\n\
                h1$ calicoctl container add a 192.168.0.1\nh1$ calicoctl container add b 192.168.0.2\n\
                expect a -> b icmp allow\n";
    match run(text).await {
        Err(ScenarioError::Unmet { line, reason, .. }) => {
            assert_eq!(line, 7);
            assert!(reason.contains("expected allow, got deny"), "{reason}");
            assert!(
                reason.contains("default drop"),
                "the explanation names the rule: {reason}"
            );
        }
        other => panic!("expected an unmet line 7, got {other:?}"),
    }
}

#[tokio::test]
async fn a_line_failing_with_an_error_prints_the_error() {
    let text = "host h1 172.31.250.1\nh1$ calicoctl node --ip=172.31.250.1\n\
                workload h1 a\nh1$ calicoctl container add a 192.168.0.1\n\
                expect nobody -> a icmp allow\n";
    let err = run(text).await.unwrap_err();
    assert!(
        matches!(err, ScenarioError::World { line: 5, .. }),
        "{err:?}"
    );
    let printed = err.to_string();
    assert!(
        printed.contains("line 5: expect nobody -> a icmp allow: nobody is neither a workload"),
        "{printed}"
    );
    // A cause under the error is printed too.
    let text = "host h1 172.31.250.1\nhost h2 172.31.250.1\n";
    let printed = run(text).await.unwrap_err().to_string();
    assert!(
        printed.contains(
            "line 2: host h2 172.31.250.1: address 172.31.250.1 is already used by host h1"
        ),
        "{printed}"
    );
}

#[tokio::test]
async fn an_address_nobody_holds_is_a_destination_with_a_verdict() {
    let base = "host h1 172.31.250.1\nh1$ calicoctl node --ip=172.31.250.1\n\
                workload h1 a\nh1$ calicoctl container add a 192.168.0.1\n";
    let seen = run(&format!("{base}expect a -> 192.168.9.9 icmp deny\n"))
        .await
        .unwrap();
    assert!(
        seen.last().unwrap().contains("no route to 192.168.9.9"),
        "the explanation names what happened: {seen:?}"
    );
    match run(&format!("{base}expect a -> 192.168.9.9 icmp allow\n")).await {
        Err(ScenarioError::Unmet {
            line: 5, reason, ..
        }) => {
            assert!(reason.contains("expected allow, got deny"), "{reason}");
            assert!(reason.contains("held by nobody"), "{reason}");
        }
        other => panic!("expected line 5 unmet, got {other:?}"),
    }
    // A source must be held by someone.
    let err = run(&format!("{base}expect 192.168.9.9 -> a icmp deny\n"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScenarioError::World { line: 5, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("no workload, host or external machine holds 192.168.9.9"),
        "{err}"
    );
}

#[tokio::test]
async fn a_command_that_should_fail_but_succeeds_is_unmet() {
    let text = "host h1 172.31.250.1\nh1$! calicoctl node --ip=172.31.250.1\n";
    match run(text).await {
        Err(ScenarioError::Unmet {
            line: 2, reason, ..
        }) => {
            assert!(reason.contains("should have failed"), "{reason}")
        }
        other => panic!("expected line 2 unmet, got {other:?}"),
    }
}

#[tokio::test]
async fn the_demo_narrates_the_seed_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("db")).unwrap());
    let mut out = Vec::new();
    calico_sim::demo::run(store, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    for needle in [
        "+ /calico/v1/Ready = true",
        "+ /calico/v1/policy/profile/PROF_A_B/tags = [\"PROF_A_B\"]",
        "add route 192.168.1.1/32 dev cali",
        "BGP: learned 192.168.1.2/32 via 172.31.250.2",
        "every expectation held",
    ] {
        assert!(
            text.contains(needle),
            "demo output lacks {needle:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn explain_names_the_deciding_policy_and_rule() {
    let text = include_str!("../scenarios/selector-policy.scenario");
    let seen = run(text).await.unwrap();
    // The outcome of a line, by the line's text in the file.
    let detail = |needle: &str| {
        let n = text.lines().position(|l| l == needle).unwrap() + 1;
        seen.iter()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("no outcome of line {n} in {seen:#?}"))
            .clone()
    };
    let allowed = detail("expect web -> db tcp/5432 allow");
    assert!(
        allowed.contains("allowed by policy db-from-web rule 1"),
        "{allowed}"
    );
    let denied = detail("expect web -> db tcp/80 deny");
    assert!(denied.contains("policy db-deny-all rule 1"), "{denied}");
}
