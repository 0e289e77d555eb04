//! `calicoctl`: builds the real [`Ctl`] from the environment and runs one command.
//!
//! Global options anywhere on the line (before `--`): `--datastore sled|etcd` (or
//! `CALICO_DATASTORE`; etcd is the default when `ETCD_ENDPOINTS`/`ETCD_AUTHORITY` is set, sled
//! under `CALICO_DATA_DIR`, default `/var/lib/calico`, otherwise) and `--hostname` (else
//! `HOSTNAME`, else the kernel's).
//! With sled, a running calico-node serves the database over `<data-dir>/calico.sock` and
//! calicoctl goes through it. Workloads are plumbed with iproute2 ([`LinuxPlumbing`]);
//! `calicoctl node` starts `calico-node` (next to this binary) with the same datastore,
//! hostname and data dir; the etcd variables reach it through the environment.
//! Prints the command's output on stdout, or `Error: <message>` on stderr and exits 1; after a
//! usage error (unknown command, subcommand or option, missing argument) the usage lines of
//! the command follow the error. `what-if --fail-on` exits 3 when the change it names occurs.
//! Help (`-h`, `--help`, `help <command>`),
//! `completion bash` and `version` need no datastore.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use calico_backends::proxy::open_local_store;
use calico_backends::{EtcdStore, Store};
use calico_cli::ctl::host_env::{hostname, LinuxNode, NetnsResolver};
use calico_cli::ctl::{help, run_offline, run_with_input, split_globals, Ctl, CtlError};
use calico_dataplane::linux::LinuxPlumbing;

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// `--datastore`, else `CALICO_DATASTORE`, else etcd when its variables are set, else sled.
fn datastore_choice(flag: Option<String>) -> anyhow::Result<&'static str> {
    let choice = flag.or_else(|| env("CALICO_DATASTORE")).unwrap_or_else(|| {
        if env("ETCD_ENDPOINTS").is_some() || env("ETCD_AUTHORITY").is_some() {
            "etcd".into()
        } else {
            "sled".into()
        }
    });
    match choice.as_str() {
        "etcd" => Ok("etcd"),
        "sled" => Ok("sled"),
        other => bail!("unknown datastore {other:?}: expected sled or etcd"),
    }
}

/// `CALICO_DATA_DIR`, default `/var/lib/calico`: the sled database and the agent's files.
fn data_dir() -> PathBuf {
    PathBuf::from(env("CALICO_DATA_DIR").unwrap_or_else(|| "/var/lib/calico".into()))
}

async fn open_store(choice: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    if choice == "etcd" {
        return Ok(Arc::new(EtcdStore::connect_from_env().await?));
    }
    open_local_store(data_dir)
        .await
        .with_context(|| format!("opening datastore {}", data_dir.display()))
}

/// A usage error of the command line, with the usage lines to show under it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
struct UsageError {
    error: CtlError,
    usage: String,
}

/// Keeps a usage error's usage lines for `main` to print.
fn with_usage(args: &[String], error: CtlError) -> anyhow::Error {
    match help::usage_for(args, &error) {
        Some(usage) => UsageError { error, usage }.into(),
        None => error.into(),
    }
}

async fn real_main() -> anyhow::Result<String> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let (globals, args) = split_globals(&all).map_err(|e| with_usage(&all, e))?;
    // Help, completion and version are answered before the datastore is opened, so they
    // work on any machine; help even with a wrong --datastore, which it documents.
    if let Some(text) = help::requested(&args).map_err(|e| with_usage(&args, e))? {
        return Ok(text);
    }
    let datastore = datastore_choice(globals.datastore)?;
    if let Some(text) = run_offline(&args).map_err(|e| with_usage(&args, e))? {
        return Ok(text);
    }
    // `profile <P> rule update` reads its rules, and a resource command with `-f -` (or
    // `--filename=-`) its file, from standard input.
    let rule_update = args.iter().any(|a| a == "rule") && args.iter().any(|a| a == "update");
    let file_from_stdin = args.windows(2).any(|w| w[0] == "-f" && w[1] == "-")
        || args.iter().any(|a| a == "--filename=-");
    let mut stdin = String::new();
    if rule_update || file_from_stdin {
        std::io::stdin()
            .read_to_string(&mut stdin)
            .context("reading standard input")?;
    }
    let host = hostname(globals.hostname.as_deref())
        .context("cannot determine the hostname; pass --hostname")?;
    let data_dir = data_dir();
    let node = LinuxNode::new(
        &data_dir,
        vec![
            "--datastore".to_owned(),
            datastore.to_owned(),
            "--dataplane".to_owned(),
            "linux".to_owned(),
        ],
    );
    let ctl = Ctl {
        store: open_store(datastore, &data_dir).await?,
        hostname: host,
        plumbing: Arc::new(LinuxPlumbing::new()),
        resolver: Arc::new(NetnsResolver::default()),
        node: Arc::new(node),
    };
    run_with_input(&ctl, &args, &stdin)
        .await
        .map_err(|e| with_usage(&args, e))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    match real_main().await {
        Ok(out) => print!("{out}"),
        Err(e) => {
            // `what-if --fail-on` matched: the report on stdout, exit 3 (a CI gate).
            if let Some(CtlError::WhatIfGate { report }) = e.downcast_ref::<CtlError>() {
                print!("{report}");
                let summary = report.lines().last().unwrap_or_default();
                eprintln!("what-if --fail-on matched: {summary}");
                std::process::exit(calico_cli::ctl::whatif::GATE_EXIT_CODE);
            }
            let err: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("Error: {}", calico_cli::ctl::message::one_line(err));
            if let Some(u) = e.downcast_ref::<UsageError>() {
                eprint!("\n{}", u.usage);
            }
            std::process::exit(1);
        }
    }
}
