//! Differential: every scenario in `sim/scenarios/` passes on real namespaces
//! (`LinuxRunner`) as it does on the simulator (`Runner`). Both runners assert every
//! `expect`, so a disagreement fails one side, and the failure names the scenario and side.
//! The corpus must use every grammar element (an IPv6 host, an external machine, a heredoc,
//! a bare `settle`), so each is exercised on both runners.

mod linux_common;

use std::sync::Arc;

use calico_backends::{MemStore, Store};
use calico_sim::linux::LinuxRunner;
use calico_sim::scenario::{parse, Runner, ScenarioTarget, Step};

#[tokio::test]
async fn every_scenario_agrees_on_sim_and_linux() {
    let Some(config) = linux_common::setup("every_scenario_agrees_on_sim_and_linux") else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "scenario"))
        .collect();
    files.sort();
    assert!(files.len() >= 13, "scenario corpus shrank: {files:?}");
    let corpus: Vec<Step> = files
        .iter()
        .flat_map(|f| parse(&std::fs::read_to_string(f).unwrap()).unwrap())
        .map(|l| l.step)
        .collect();
    let uses = |what: &str, f: &dyn Fn(&Step) -> bool| {
        assert!(corpus.iter().any(f), "no scenario uses {what}");
    };
    uses("a host with an IPv6 address", &|s| {
        matches!(s, Step::Host { ip6: Some(_), .. })
    });
    uses("an external machine", &|s| {
        matches!(s, Step::External { .. })
    });
    uses("a heredoc", &|s| {
        matches!(s, Step::Calicoctl { stdin: Some(_), .. })
    });
    uses("settle", &|s| matches!(s, Step::Settle));

    let mut failures = Vec::new();
    let (mut expects, mut ran_expects) = (0, 0);
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let lines = parse(&std::fs::read_to_string(file).unwrap()).unwrap();
        expects += lines
            .iter()
            .filter(|l| matches!(l.step, Step::Expect { .. }))
            .count();
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        if let Err(e) = Runner::new(store).run(&lines, |_| {}).await {
            failures.push(format!("{name} on the simulator: {e}"));
        }
        // A scenario that makes an IPIP pool needs a kernel with CONFIG_NET_IPIP: elsewhere
        // it runs on the simulator only, and says so (`linux_overlay` checks what such a
        // kernel must do instead).
        let needs_ipip = lines.iter().any(|l| {
            matches!(&l.step, Step::Calicoctl { args, must_fail: false, .. }
                if args.iter().any(|a| a == "--ipip"))
        });
        if needs_ipip {
            if let Err(reason) = linux_common::ipip_supported() {
                eprintln!("{name} on linux SKIPPED: {reason}");
                expects -= lines
                    .iter()
                    .filter(|l| matches!(l.step, Step::Expect { .. }))
                    .count();
                continue;
            }
        }
        let mut linux = LinuxRunner::new(config.clone()).unwrap();
        let mut ran = 0;
        let result = linux
            .run(&lines, |r| ran += usize::from(r.text.starts_with("expect")))
            .await;
        drop(linux);
        if let Err(e) = result {
            failures.push(format!("{name} on linux: {e}"));
        }
        ran_expects += ran;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(ran_expects, expects, "every expect line ran on linux");
}
