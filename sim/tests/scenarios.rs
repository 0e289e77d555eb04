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
