//! `ProcessNodeControl`: the real [`NodeControl`] — `calicoctl node` starts the
//! `calico-node` binary as a detached process (own session, like a daemon) with a pid file
//! and a log file, `node stop` sends it SIGTERM, `status` checks the pid in `/proc`.
//!
//! `start` returns once the agent serves: calico-node writes its pid file only when its
//! datastore is open, and on sled a request through `calico.sock` must then be answered, so
//! calicoctl commands run right after `calicoctl node` reach the store through the agent
//! instead of meeting the database lock.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use calico_backends::proxy::{release_local, socket_path, RemoteStore};
use calico_backends::Store;

use crate::ctl::{NodeControl, NodeStartOptions, NodeStatus};

/// How long `start` waits for the new agent to write its pid file, and `stop` for it to exit.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Starts and stops `calico-node` as an OS process.
#[derive(Debug, Clone)]
pub struct ProcessNodeControl {
    /// The agent's data dir (`--data-dir`); the pid file lives here.
    pub data_dir: PathBuf,
    /// Where the agent logs (`--log-file`).
    pub log_file: PathBuf,
    /// The `calico-node` binary; `None` finds it next to the current executable, then on PATH.
    pub binary: Option<PathBuf>,
    /// More arguments for the agent (`--datastore etcd`, `--dataplane sim`, ...).
    pub extra_args: Vec<String>,
}

impl ProcessNodeControl {
    /// Pid file and log file under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            log_file: data_dir.join("calico-node.log"),
            data_dir,
            binary: None,
            extra_args: Vec::new(),
        }
    }

    /// `<data-dir>/calico-node.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.data_dir.join("calico-node.pid")
    }

    /// The `calico-node` binary this control starts.
    pub fn binary(&self) -> PathBuf {
        if let Some(binary) = &self.binary {
            return binary.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("calico-node")))
            .filter(|candidate| candidate.is_file())
            .unwrap_or_else(|| PathBuf::from("calico-node"))
    }

    /// The agent's log file for `opts`: `<log-dir>/calico-node.log`, else `log_file`.
    pub fn log_file_for(&self, opts: &NodeStartOptions) -> PathBuf {
        opts.log_dir
            .as_ref()
            .map_or_else(|| self.log_file.clone(), |dir| dir.join("calico-node.log"))
    }

    /// The agent's command line for `opts` (without the binary).
    pub fn args(&self, opts: &NodeStartOptions) -> Vec<String> {
        let log_file = self.log_file_for(opts);
        // BIRD logs beside the agent's log.
        let log_dir = opts
            .log_dir
            .clone()
            .or_else(|| log_file.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| self.data_dir.clone());
        let mut args = vec![
            "--hostname".to_owned(),
            opts.hostname.clone(),
            "--data-dir".to_owned(),
            self.data_dir.display().to_string(),
            "--pid-file".to_owned(),
            self.pid_file().display().to_string(),
            "--log-dir".to_owned(),
            log_dir.display().to_string(),
        ];
        if !opts.foreground {
            args.push("--log-file".to_owned());
            args.push(log_file.display().to_string());
        }
        if opts.policy_only {
            args.push("--backend".to_owned());
            args.push("none".to_owned());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// `calico-node --version`'s output, e.g. `calico-node 0.1.0`.
    pub fn binary_version(&self) -> Option<String> {
        let out = std::process::Command::new(self.binary())
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    /// The shell command that runs the agent by hand in the foreground.
    pub fn command_line(&self, opts: &NodeStartOptions) -> String {
        let foreground = NodeStartOptions {
            foreground: true,
            ..opts.clone()
        };
        std::iter::once(self.binary().display().to_string())
            .chain(self.args(&foreground))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether calicoctl can use the agent's store: on sled, a read through `calico.sock` is
    /// answered. The agent binds the socket before it writes its pid file, so once the pid
    /// file is there a socket nobody listens on is a stale one and the agent serves none
    /// (etcd): it is ready.
    async fn serves(&self) -> bool {
        let socket = socket_path(&self.data_dir);
        if !socket.exists() {
            return true;
        }
        match RemoteStore::connect(&socket).await {
            Ok(remote) => remote.get("/calico/v1/Ready").await.is_ok(),
            Err(_) => true,
        }
    }

    /// The pid of a running agent, if the pid file names a live `calico-node` process.
    fn running_pid(&self) -> Option<u32> {
        let pid = read_pid(&self.pid_file())?;
        is_calico_node(pid).then_some(pid)
    }
}

#[async_trait]
impl NodeControl for ProcessNodeControl {
    async fn start(&self, opts: &NodeStartOptions) -> anyhow::Result<()> {
        self.stop().await?;
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data dir {}", self.data_dir.display()))?;
        let binary = self.binary();
        let args = self.args(opts);
        // This calicoctl may hold the sled database (it just wrote the host's records): let
        // go of it so the agent can open it; later calls reach the store through the agent.
        release_local(&self.data_dir).await;
        if opts.foreground {
            // Ctrl-C reaches the agent (same process group) and must not kill us before it
            // has exited: our caller cleans up after it (`LinuxNode` stops BIRD).
            let _sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("installing a SIGINT handler")?;
            let status = tokio::process::Command::new(&binary)
                .args(&args)
                .status()
                .await
                .with_context(|| format!("running {}", binary.display()))?;
            if !status.success() {
                bail!("calico-node exited with {status}");
            }
            return Ok(());
        }
        let log_file = self.log_file_for(opts);
        if let Some(dir) = log_file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating log dir {}", dir.display()))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)
            .with_context(|| format!("opening log file {}", log_file.display()))?;
        let log_err = log
            .try_clone()
            .with_context(|| format!("opening log file {}", log_file.display()))?;
        let mut child = std::process::Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group, so the terminal's Ctrl-C does not reach it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().context("waiting for calico-node")? {
                bail!(
                    "calico-node exited at startup with {status}; see {}",
                    log_file.display()
                );
            }
            if read_pid(&self.pid_file()) == Some(child.id()) && self.serves().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                // Not left running unregistered: a later `node stop` could not find it.
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "calico-node (pid {}) was not ready (pid file {} and datastore socket) \
                     within {WAIT:?}; stopped it; see {}",
                    child.id(),
                    self.pid_file().display(),
                    log_file.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn stop(&self) -> anyhow::Result<()> {
        let Some(pid) = self.running_pid() else {
            // Nothing runs; a stale pid file is just removed.
            let _ = std::fs::remove_file(self.pid_file());
            return Ok(());
        };
        signal(pid, "TERM")?;
        let deadline = tokio::time::Instant::now() + WAIT;
        while is_calico_node(pid) {
            if tokio::time::Instant::now() >= deadline {
                bail!("calico-node (pid {pid}) did not exit within {WAIT:?} of SIGTERM");
            }
            tokio::time::sleep(POLL).await;
        }
        let _ = std::fs::remove_file(self.pid_file());
        Ok(())
    }

    async fn status(&self) -> anyhow::Result<NodeStatus> {
        Ok(match self.running_pid() {
            Some(pid) => NodeStatus {
                running: true,
                detail: format!("calico-node running, pid {pid}"),
                bgp_peers: Vec::new(),
            },
            None => NodeStatus {
                running: false,
                detail: "calico-node not running".to_owned(),
                bgp_peers: Vec::new(),
            },
        })
    }
}

/// The pid in `path`, if it holds one.
fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live (not zombie) process running `calico-node`; guards against a
/// stale pid file naming a recycled pid.
fn is_calico_node(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name: "<pid> (<comm>) <state> ...".
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .next()
            .is_some_and(|argv0| String::from_utf8_lossy(argv0).ends_with("calico-node"))
    })
}

/// Sends a signal with `kill -<sig> <pid>` (like the shell command).
fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> NodeStartOptions {
        NodeStartOptions {
            hostname: "h1".into(),
            ip: "172.31.250.1".parse().unwrap(),
            ip6: None,
            foreground: false,
            log_dir: None,
            policy_only: false,
        }
    }

    #[test]
    fn the_agent_gets_the_log_dir_and_the_backend() {
        let control = ProcessNodeControl::new("/var/lib/calico-test");
        let args = control.args(&options()).join(" ");
        assert!(
            args.contains("--log-dir /var/lib/calico-test ")
                && args.contains("--log-file /var/lib/calico-test/calico-node.log")
                && !args.contains("--backend"),
            "{args}"
        );
        let opts = NodeStartOptions {
            log_dir: Some("/var/log/calico".into()),
            policy_only: true,
            ..options()
        };
        let args = control.args(&opts).join(" ");
        assert!(
            args.contains("--log-dir /var/log/calico ")
                && args.contains("--log-file /var/log/calico/calico-node.log")
                && args.ends_with("--backend none"),
            "{args}"
        );
        // By hand: in the foreground, logging to the terminal.
        let line = control.command_line(&opts);
        assert!(
            line.contains("calico-node --hostname h1") && !line.contains("--log-file"),
            "{line}"
        );
    }
}
