//! Every command explains itself: `--help`, `-h` anywhere and `help <command>` print the
//! command's docopt-style usage without touching anything; a usage error comes with the usage
//! lines of its command; the bash completion generated from the same tables completes.

mod calicoctl_support;

use std::process::Command;

use calico_cli::ctl::grammar::{self, COMMANDS};
use calico_cli::ctl::help;
use calicoctl_support::{dump, store, value, words, Host};

/// The commands the original had (reference section 2), all of which must explain themselves.
const ORIGINAL_COMMANDS: &[&str] = &[
    "node",
    "status",
    "container",
    "profile",
    "endpoint",
    "pool",
    "bgp",
    "ipam",
    "config",
    "checksystem",
    "diags",
    "version",
];

#[tokio::test]
async fn every_command_has_help_in_three_spellings() {
    let h1 = Host::new(store(), "host1");
    for name in ORIGINAL_COMMANDS {
        let c = grammar::command(name).unwrap_or_else(|| panic!("no grammar for {name}"));
        let text = h1.ok(&format!("{name} --help")).await;
        assert!(
            text.starts_with(&format!("Usage:\n  calicoctl {name}")),
            "{name} --help:\n{text}"
        );
        assert!(text.contains("\nDescription:\n  "), "{name}:\n{text}");
        if !c.options.is_empty() {
            assert!(text.contains("\nOptions:\n  "), "{name}:\n{text}");
        }
        assert_eq!(text, help::command_help(c));
        assert_eq!(h1.ok(&format!("help {name}")).await, text, "help {name}");
        assert_eq!(h1.ok(&format!("{name} -h")).await, text, "{name} -h");
    }
    // Help touched nothing, not even for `node`, which otherwise registers the host.
    assert_eq!(dump(&h1.ctl.store).await, Vec::new());
    assert!(h1.node.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn node_help_documents_the_original_options_with_defaults() {
    let h1 = Host::new(store(), "host1");
    let text = h1.ok("node --help").await;
    for needle in [
        "--ip=<IP>",
        "--ip6=<IP6>",
        "--as=<AS_NUM>",
        "--log-dir=<LOG_DIR>",
        "[default: $CALICO_DATA_DIR]",
        "--backend=<BACKEND>",
        "--runtime=<RUNTIME>",
        "--node-image=<DOCKER_IMAGE_NAME>",
        "--libnetwork",
        "--no-pull",
        "calicoctl node stop [--force]",
        "calicoctl node remove [--hostname=<HOSTNAME>] [--remove-endpoints]",
        "calicoctl node bgp peer add <PEER_IP> as <AS_NUM>",
    ] {
        assert!(
            text.contains(needle),
            "node --help lacks {needle:?}:\n{text}"
        );
    }
    // Each default sits in its own option's block.
    let backend = &text[text.find("  --backend=").unwrap()..text.find("  --runtime=").unwrap()];
    assert!(
        backend.contains("none: policy only") && backend.contains("[default: bird]"),
        "{backend}"
    );
    let log_dir = &text[text.find("  --log-dir=").unwrap()..text.find("  --backend=").unwrap()];
    assert!(log_dir.contains("[default: $CALICO_DATA_DIR]"), "{log_dir}");
    let diags = h1.ok("help diags").await;
    assert!(
        diags.starts_with("Usage:\n  calicoctl diags [--log-dir=<LOG_DIR>]\n"),
        "{diags}"
    );
    assert!(diags.contains("[default: $CALICO_DATA_DIR]"), "{diags}");
    let container = h1.ok("container --help").await;
    assert!(container.contains("[default: eth1]"), "{container}");
}

#[tokio::test]
async fn dash_h_in_the_middle_of_a_line_shows_help_and_does_nothing() {
    let h1 = Host::new(store(), "host1");
    h1.ok("node --ip=172.31.250.1").await;
    h1.workload("workload_A");
    let before = dump(&h1.ctl.store).await;
    let container_help = help::command_help(grammar::command("container").unwrap());
    assert_eq!(
        h1.ok("container add workload_A -h 192.168.1.1").await,
        container_help
    );
    assert_eq!(
        h1.ok("container add workload_A 192.168.1.1 --help").await,
        container_help
    );
    let node_help = help::command_help(grammar::command("node").unwrap());
    assert_eq!(h1.ok("node stop -h --force").await, node_help);
    assert_eq!(dump(&h1.ctl.store).await, before);
    assert_eq!(h1.veth_count(), 0);
    // With no command, or an unknown one, -h shows the top-level usage.
    let top = help::top_level();
    assert_eq!(h1.ok("-h").await, top);
    assert_eq!(h1.ok("help").await, top);
    for c in COMMANDS {
        assert!(top.contains(&format!("\n    {:<16}{}\n", c.name, c.summary)));
    }
}

#[tokio::test]
async fn usage_errors_come_with_the_usage_lines_of_their_command() {
    let h1 = Host::new(store(), "host1");
    let cases: &[(&str, &str)] = &[
        ("pool frobnicate", "pool"),
        ("pool add 10.0.0.0/8 --bogus", "pool"),
        ("container", "container"),
        ("profile P tag", "profile"),
        ("bgp peer show extra", "bgp"),
        ("ipam", "ipam"),
        ("config", "config"),
        ("version extra", "version"),
    ];
    for (line, command) in cases {
        let args = words(line);
        let err = h1.try_run(line).await.unwrap_err();
        assert!(err.is_usage(), "{line}: {err:?} is not a usage error");
        let usage = help::usage_for(&args, &err).unwrap();
        let c = grammar::command(command).unwrap();
        assert!(usage.starts_with(&help::usage_lines(c)), "{line}:\n{usage}");
        assert!(
            usage.contains(&format!("calicoctl {command} --help")),
            "{usage}"
        );
    }
    // An unknown command shows the command list; `help <unknown>` is an error too.
    let err = h1.try_run("frobnicate").await.unwrap_err();
    assert_eq!(
        help::usage_for(&words("frobnicate"), &err),
        Some(help::top_level())
    );
    let err = h1.try_run("help frobnicate").await.unwrap_err();
    assert!(err.to_string().contains("frobnicate"), "{err}");
    // A value error names the value and shows no usage.
    let err = h1.try_run("pool add not-a-cidr").await.unwrap_err();
    assert_eq!(help::usage_for(&words("pool add not-a-cidr"), &err), None);
}

#[tokio::test]
async fn global_options_anywhere_on_the_line() {
    let store = store();
    let h1 = Host::new(store.clone(), "host1");
    h1.ok("pool add 10.7.0.0/24").await;
    let out = h1.ok("-o json pool show --ipv4 --hostname=host2").await;
    let pools: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pools[0]["cidr"], "10.7.0.0/24");
    // --hostname acts wherever it stands.
    h1.ok("config node bgp loglevel debug --hostname host2")
        .await;
    h1.ok("config --hostname=host3 node bgp loglevel info")
        .await;
    assert_eq!(
        value(&store, "/calico/bgp/v1/host/host2/loglevel")
            .await
            .as_deref(),
        Some("debug")
    );
    assert_eq!(
        value(&store, "/calico/bgp/v1/host/host3/loglevel")
            .await
            .as_deref(),
        Some("info")
    );
    assert_eq!(
        value(&store, "/calico/bgp/v1/host/host1/loglevel").await,
        None
    );
    // After `--` it is an argument, not an option.
    let err = h1.try_run("profile add -- --hostname=x").await.unwrap_err();
    assert!(err.to_string().contains("--hostname=x"), "{err}");
}

#[tokio::test]
async fn every_usage_line_reaches_its_command() {
    // Each usage line, its placeholders filled with a dummy word and the first of each set of
    // alternatives taken, must get past the command's grammar: whatever else goes wrong with
    // the dummy values, it is not a usage error. So help never documents a form the dispatch
    // does not know.
    for c in COMMANDS {
        if c.name == "diags" {
            // Documented here; the command itself is dispatched by the diags work.
            continue;
        }
        for line in c.usage {
            let args = calico_cli::ctl::completion_pattern(line)
                .iter()
                .map(|tok| match tok.as_str() {
                    "*" | "**" => "x".to_string(),
                    alternatives => alternatives.split('|').next().unwrap().to_string(),
                })
                .collect::<Vec<_>>();
            let mut args = args;
            if line.contains("(--at=<POSITION>|") {
                // The pattern stops before this required choice; take its first branch.
                args.push("--at=1".into());
            }
            if line.contains(" -f <FILENAME>") {
                // The pattern keeps the file but not its single-dash option word.
                args.insert(1, "-f".into());
            }
            let h1 = Host::new(store(), "host1");
            h1.ok("node --ip=172.31.250.1").await;
            if let Err(err) = calico_cli::ctl::run(&h1.ctl, &args).await {
                assert!(!err.is_usage(), "{line:?} as {args:?}: {err}");
            }
        }
    }
}

/// Sources the generated script in bash and completes `words` (the last one being typed).
fn complete(script: &str, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "{script}\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_calicoctl\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        quoted.join(" "),
        words.len() - 1
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("running bash");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn bash_completion_is_valid_and_completes_from_the_grammar() {
    let h1 = Host::new(store(), "host1");
    let script = h1.ok("completion bash").await;
    let check = Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .expect("running bash -n");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        complete(&script, &["calicoctl", "container", ""]),
        ["add", "remove"]
    );
    assert_eq!(
        complete(&script, &["calicoctl", "container", "workload_A", ""]),
        ["ip", "endpoint", "endpoint-id", "profile", "label"]
    );
    assert_eq!(
        complete(&script, &["calicoctl", "container", "workload_A", "ip", ""]),
        ["add", "remove"]
    );
    let top = complete(&script, &["calicoctl", ""]);
    for name in ORIGINAL_COMMANDS {
        assert!(top.iter().any(|w| w == name), "{name} missing from {top:?}");
    }
    // Options and their values are skipped wherever they stand.
    assert_eq!(
        complete(
            &script,
            &[
                "calicoctl",
                "-o",
                "json",
                "--hostname",
                "h1",
                "profile",
                "P",
                "rule",
                "add",
                ""
            ]
        ),
        ["inbound", "outbound"]
    );
    assert_eq!(
        complete(&script, &["calicoctl", "node", "--backend", ""]),
        ["bird", "none"]
    );
    assert_eq!(
        complete(&script, &["calicoctl", "node", "--log"]),
        ["--log-dir="]
    );
    assert_eq!(
        complete(&script, &["calicoctl", "bgp", "node-mesh", ""]),
        ["on", "off"]
    );
}
