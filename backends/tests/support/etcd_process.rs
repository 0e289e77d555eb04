//! What the single-server and the cluster test harnesses share: finding the `etcd` binary
//! (or skipping), free ports, waiting until a started member answers a read, and the tail of
//! its log for the panic message when it does not.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The `etcd` binary, or `None` after printing why the caller skips; with `CI` set a missing
/// binary panics instead, so CI cannot pass without running the etcd tests.
pub fn binary_or_skip() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"));
    let found = on_path
        .chain(std::iter::once(PathBuf::from("/usr/bin/etcd")))
        .find(|path| path.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("etcd binary not found in PATH or /usr/bin/etcd; CI must run the etcd tests (apt install etcd-server)");
        }
        eprintln!("skipping: install etcd-server (no etcd binary in PATH or /usr/bin/etcd)");
    }
    found
}

/// `n` distinct free ports: bound to port 0 together so they differ, then released for etcd.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// Polls until the member at `endpoint` serves a read (connecting with `options`), failing
/// with its log's tail when `child` exits first or `within` passes.
pub async fn wait_answering(
    child: &mut Option<Child>,
    endpoint: &str,
    options: impl Fn() -> etcd_client::ConnectOptions,
    within: Duration,
    log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
            return Err(format!(
                "etcd {endpoint} exited with {status} while starting:\n{}",
                tail(log)
            ));
        }
        if answers(endpoint, options()).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "etcd at {endpoint} not healthy within {within:?}:\n{}",
                tail(log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether etcd at `endpoint` serves a read (not merely listens): a linearizable read, so a
/// cluster member answers only once there is a leader.
async fn answers(endpoint: &str, options: etcd_client::ConnectOptions) -> bool {
    let probe = async {
        let mut client = etcd_client::Client::connect([endpoint], Some(options))
            .await
            .ok()?;
        client.get("health-probe", None).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(_))
    )
}

/// The last 30 lines of the log at `path`.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
