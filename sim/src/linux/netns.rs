//! Network namespaces this run created, deleted on drop with every process inside them.
//!
//! A [`Netns`] exists only for a namespace `ip netns add` created for us: a name that already
//! exists is refused, so a namespace we did not create is never deleted.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::LinuxError;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// How long teardown waits for SIGTERMed processes before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Runs `program args` to completion, like the shell would, capturing its output.
///
/// # Errors
/// `Command` naming the command line when it cannot start or exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String, LinuxError> {
    let out = output(program, args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LinuxError::Command {
            command: command_line(program, args),
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

fn output(program: &str, args: &[&str]) -> Result<Output, LinuxError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LinuxError::Command {
            command: command_line(program, args),
            reason: e.to_string(),
        })
}

/// `program arg1 arg2`, for messages.
pub fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a namespace of this name exists (`/var/run/netns/<name>`).
pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// A network namespace created by this run.
#[derive(Debug)]
pub struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    /// Creates namespace `name` (like `ip netns add`) with `lo` up.
    ///
    /// # Errors
    /// `NamespaceExists` when a namespace of that name already exists (it is left alone);
    /// `Command` when `ip` fails.
    pub fn create(name: &str) -> Result<Netns, LinuxError> {
        if exists(name) {
            return Err(LinuxError::NamespaceExists {
                name: name.to_string(),
            });
        }
        run("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
            deleted: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, for `ip -n` and `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> args...`.
    ///
    /// # Errors
    /// As [`run`].
    pub fn ip(&self, args: &[&str]) -> Result<String, LinuxError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip netns exec <ns> program args...`.
    ///
    /// # Errors
    /// As [`run`].
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, LinuxError> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// The pids of the processes running in the namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        run("ip", &["netns", "pids", &self.name])
            .map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops every process in the namespace (SIGTERM, then SIGKILL after a grace period).
    /// They are ours: the namespace is, and only this run started processes in it.
    pub fn kill_processes(&self) -> Vec<LinuxError> {
        let mut errors = Vec::new();
        let pids = self.pids();
        for pid in &pids {
            signal(*pid, "TERM");
        }
        let deadline = Instant::now() + TERM_GRACE;
        while !self.pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in self.pids() {
            signal(pid, "KILL");
        }
        let deadline = Instant::now() + TERM_GRACE;
        while !self.pids().is_empty() {
            if Instant::now() >= deadline {
                errors.push(LinuxError::Teardown {
                    what: format!("processes {:?} in namespace {}", self.pids(), self.name),
                    reason: "still running after SIGKILL".into(),
                });
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        errors
    }

    /// Kills the namespace's processes and deletes it (like `ip netns del`); every error is
    /// returned.
    pub fn delete(&mut self) -> Vec<LinuxError> {
        if self.deleted {
            return Vec::new();
        }
        self.deleted = true;
        let mut errors = self.kill_processes();
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            errors.push(e);
        }
        errors
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for e in self.delete() {
            eprintln!("teardown: {e}");
        }
    }
}

/// Sends `sig` to `pid` (like `kill -<sig> <pid>`); a process already gone is no error.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}
