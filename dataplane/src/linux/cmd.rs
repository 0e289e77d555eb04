//! Running one tool (`iptables-restore`, `ipset`, `ip`, `birdc`) with optional stdin, capturing
//! its output and turning a failure into a [`DataplaneError::Command`] that names the operation.
//!
//! Every invocation can be recorded in a [`CommandLog`], so tests can count processes and read
//! the exact restore input an apply produced.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::DataplaneError;

/// One process the dataplane started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: String,
    pub args: Vec<String>,
    /// What was written to its stdin (restore input), if anything.
    pub stdin: Option<String>,
}

impl Invocation {
    /// `program arg1 arg2`, for messages.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A shared, cheaply cloned record of invocations; recording is off until [`CommandLog::enable`].
#[derive(Debug, Clone, Default)]
pub struct CommandLog {
    inner: Arc<Mutex<LogState>>,
}

#[derive(Debug, Default)]
struct LogState {
    enabled: bool,
    entries: Vec<Invocation>,
}

impl CommandLog {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts recording.
    pub fn enable(&self) {
        self.lock().enabled = true;
    }

    /// The invocations recorded since the last `take`, oldest first.
    pub fn take(&self) -> Vec<Invocation> {
        std::mem::take(&mut self.lock().entries)
    }

    fn record(&self, inv: &Invocation) {
        let mut state = self.lock();
        if state.enabled {
            state.entries.push(inv.clone());
        }
    }
}

/// Starts tools; one per [`crate::linux::LinuxDataplane`] or plumbing.
#[derive(Debug, Clone, Default)]
pub struct Runner {
    log: CommandLog,
}

impl Runner {
    /// The log every invocation of this runner goes to.
    pub fn log(&self) -> &CommandLog {
        &self.log
    }

    /// Runs `program args` (stdin fed from `stdin`) and returns its stdout.
    ///
    /// # Errors
    /// [`DataplaneError::Io`] when the tool cannot be started, [`DataplaneError::Command`] with
    /// its stderr when it exits non-zero; both name `operation`.
    pub fn run(
        &self,
        operation: &str,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, DataplaneError> {
        let inv = Invocation {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: stdin.map(str::to_string),
        };
        self.log.record(&inv);
        let io_err = |source| DataplaneError::Io {
            operation: format!("{operation}: starting {program}"),
            source,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err)?;
        // Feed stdin from a scoped thread so a tool that writes a lot before reading all of its
        // input cannot deadlock against us.
        let output = std::thread::scope(|s| {
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                s.spawn(move || {
                    // A tool that exits early closes the pipe; its exit status tells why.
                    let _ = pipe.write_all(text.as_bytes());
                });
            }
            child.wait_with_output()
        })
        .map_err(io_err)?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = format!("{} ({})", stdout.trim(), output.status);
        }
        Err(DataplaneError::Command {
            operation: operation.to_string(),
            command: inv.command_line(),
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_reaches_the_tool_and_is_logged() {
        let runner = Runner::default();
        runner.log().enable();
        let out = runner.run("echoing", "cat", &[], Some("hello\n")).unwrap();
        assert_eq!(out, "hello\n");
        let log = runner.log().take();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].stdin.as_deref(), Some("hello\n"));
        assert!(runner.log().take().is_empty());
    }

    #[test]
    fn failure_names_the_operation_and_carries_stderr() {
        let runner = Runner::default();
        let err = runner
            .run("listing nothing", "ls", &["/nonexistent-calirs"], None)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("listing nothing: ls /nonexistent-calirs failed"),
            "{text}"
        );
        let missing = runner
            .run("starting", "/nonexistent-tool", &[], None)
            .unwrap_err();
        assert!(matches!(missing, DataplaneError::Io { .. }), "{missing}");
    }
}
