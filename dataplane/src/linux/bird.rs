//! The BIRD process manager: one BIRD 2 daemon per family (`bird.cfg` / `bird6.cfg` in the run
//! dir, like BIRD and BIRD6 of the original), each with its own control socket and pid file.
//!
//! Apply writes the config rendered by `render_bird` when its text changed and reloads it
//! (`birdc configure`), starts the daemon when it is not running, and stops it (`birdc down`)
//! when the family has no config any more.
//!
//! BIRD daemonises, so it outlives the agent that started it: a restarted agent adopts the
//! daemon its pid file names (routes and sessions survive the restart), and stopping the
//! node is an explicit [`stop_daemons`] of the run dir, which waits until the process is
//! gone. In policy-only mode ([`BirdManager::policy_only`], the original's `--backend none`)
//! no daemon runs at all.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calico_core::desired::BirdConfig;
use calico_core::plan::Change;
use calico_core::render::bird::render_bird;
use serde::Serialize;

use super::cmd::Runner;
use crate::DataplaneError;

/// One row of `birdc show protocols`, for `calicoctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpProtocol {
    pub name: String,
    pub proto: String,
    pub table: String,
    pub state: String,
    pub since: String,
    pub info: String,
}

/// Parses `birdc show protocols` output (the banner and the header are skipped).
pub fn parse_protocols(text: &str) -> Vec<BgpProtocol> {
    text.lines()
        .filter(|l| !l.starts_with("BIRD ") && !l.starts_with("Name ") && !l.trim().is_empty())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mut next = || words.next().map(str::to_string);
            let row = BgpProtocol {
                name: next()?,
                proto: next()?,
                table: next()?,
                state: next()?,
                since: next()?,
                info: String::new(),
            };
            let info = words.collect::<Vec<_>>().join(" ");
            Some(BgpProtocol { info, ..row })
        })
        .collect()
}

/// One daemon: its files and the config last applied.
#[derive(Debug, Clone)]
struct Instance {
    v6: bool,
    dir: PathBuf,
    /// BIRD's log file (`bird -D`), else BIRD logs to syslog.
    log_file: Option<PathBuf>,
    applied: Option<BirdConfig>,
}

/// How long a stopped BIRD may take to exit (and a started one to write its pid file)
/// before the step counts as failed.
const EXIT_WAIT: Duration = Duration::from_secs(5);
const EXIT_POLL: Duration = Duration::from_millis(20);

impl Instance {
    fn base(&self) -> &'static str {
        if self.v6 {
            "bird6"
        } else {
            "bird"
        }
    }

    fn path(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.base()))
    }

    fn config_path(&self) -> PathBuf {
        self.path("cfg")
    }

    fn socket(&self) -> String {
        self.path("ctl").to_string_lossy().into_owned()
    }

    /// The pid the pid file names, if that is a live BIRD (not a zombie, not a recycled pid).
    fn live_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.path("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_live_bird(pid).then_some(pid)
    }

    fn running(&self) -> bool {
        self.live_pid().is_some()
    }

    fn current_text(&self) -> Option<String> {
        std::fs::read_to_string(self.config_path()).ok()
    }

    /// Brings this daemon to `cfg`. Reports a written or removed config as
    /// `WriteBirdConfig` (the start, stop or reload it takes is part of it) and a start with
    /// an unchanged config (a daemon found dead) as `StartBird`.
    fn apply(
        &mut self,
        runner: &Runner,
        cfg: Option<&BirdConfig>,
    ) -> Result<Vec<Change>, DataplaneError> {
        let mut changes = Vec::new();
        let name = self.base();
        let Some(cfg) = cfg else {
            let mut removed = false;
            if self.running() {
                self.stop(runner)?;
                removed = true;
            }
            if self.config_path().exists() {
                std::fs::remove_file(self.config_path()).map_err(|source| DataplaneError::Io {
                    operation: format!("removing {}", self.config_path().display()),
                    source,
                })?;
                removed = true;
            }
            if removed {
                changes.push(Change::WriteBirdConfig {
                    v6: self.v6,
                    config: None,
                });
            }
            self.applied = None;
            return Ok(changes);
        };
        let text = render_bird(cfg, self.v6);
        let changed = self.current_text().as_deref() != Some(text.as_str());
        if changed {
            self.write_config(&text)?;
            changes.push(Change::WriteBirdConfig {
                v6: self.v6,
                config: Some(cfg.clone()),
            });
        }
        if !self.running() {
            let cfg_path = self.config_path().to_string_lossy().into_owned();
            let pid = self.path("pid").to_string_lossy().into_owned();
            let socket = self.socket();
            let mut args = vec!["-c", cfg_path.as_str(), "-s", &socket, "-P", &pid];
            let log = self
                .log_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned());
            if let Some(log) = &log {
                args.extend(["-D", log.as_str()]);
            }
            runner.run(&format!("starting {name}"), "bird", &args, None)?;
            // `bird` returns once it has forked; the daemon writes its pid file a moment
            // later. Started means running: until then a stale pid file (a killed daemon's)
            // would make the next observe report BIRD as down.
            let deadline = Instant::now() + EXIT_WAIT;
            while !self.running() {
                if Instant::now() >= deadline {
                    return Err(DataplaneError::Command {
                        operation: format!("starting {name}"),
                        command: format!("bird -c {cfg_path} -s {socket} -P {pid}"),
                        stderr: format!("no live bird named by {pid} after {EXIT_WAIT:?}"),
                    });
                }
                std::thread::sleep(EXIT_POLL);
            }
            if !changed {
                changes.push(Change::StartBird { v6: self.v6 });
            }
        } else if changed {
            let out = runner.run(
                &format!("reloading {name}"),
                "birdc",
                &["-s", &self.socket(), "configure"],
                None,
            )?;
            if !out.contains("Reconfigur") {
                return Err(DataplaneError::Command {
                    operation: format!("reloading {name}"),
                    command: format!("birdc -s {} configure", self.socket()),
                    stderr: out.trim().to_string(),
                });
            }
        }
        self.applied = Some(cfg.clone());
        Ok(changes)
    }

    fn write_config(&self, text: &str) -> Result<(), DataplaneError> {
        let io = |source| DataplaneError::Io {
            operation: format!("writing {}", self.config_path().display()),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = self.path("cfg.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, self.config_path()).map_err(io)
    }

    /// `birdc down` (a clean BGP shutdown), `kill -TERM` when the control socket does not
    /// answer, then waits until the process is gone.
    fn stop(&self, runner: &Runner) -> Result<(), DataplaneError> {
        let Some(pid) = self.live_pid() else {
            return Ok(());
        };
        let operation = format!("stopping {} (pid {pid})", self.base());
        if runner
            .run(&operation, "birdc", &["-s", &self.socket(), "down"], None)
            .is_err()
        {
            runner.run(&operation, "kill", &["-TERM", &pid.to_string()], None)?;
        }
        let deadline = Instant::now() + EXIT_WAIT;
        while is_live_bird(pid) {
            if Instant::now() >= deadline {
                return Err(DataplaneError::Command {
                    operation,
                    command: format!("birdc -s {} down", self.socket()),
                    stderr: format!("still running {EXIT_WAIT:?} after being told to stop"),
                });
            }
            std::thread::sleep(EXIT_POLL);
        }
        Ok(())
    }

    /// The config in force: the one applied, if the file still holds it and BIRD runs.
    fn observe(&self) -> Option<BirdConfig> {
        let cfg = self.applied.as_ref()?;
        let text = render_bird(cfg, self.v6);
        (self.current_text().as_deref() == Some(text.as_str()) && self.running())
            .then(|| cfg.clone())
    }
}

/// Whether `pid` is a live `bird` process: not a zombie (whose parent has not reaped it
/// yet), and its command is `bird` (a pid file left by a killed daemon may name a recycled
/// pid).
fn is_live_bird(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "<pid> (<comm>) <state> ...": the command is in parentheses, the state follows.
    let Some((head, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map_or("", |(_, c)| c);
    let state = rest.trim_start().chars().next();
    comm == "bird" && !matches!(state, Some('Z' | 'X') | None)
}

/// Stops every BIRD daemon whose pid file is in `run_dir` and waits until each has exited
/// (`calicoctl node stop`, after the agent itself has exited). Returns every error.
pub fn stop_daemons(run_dir: &Path) -> Vec<DataplaneError> {
    BirdManager::new(run_dir).stop(&Runner::default())
}

/// The live BIRD daemons of `run_dir`, as `(name, pid)` (`bird`, `bird6`).
pub fn running_daemons(run_dir: &Path) -> Vec<(&'static str, u32)> {
    let manager = BirdManager::new(run_dir);
    [&manager.v4, &manager.v6]
        .into_iter()
        .filter_map(|inst| inst.live_pid().map(|pid| (inst.base(), pid)))
        .collect()
}

/// BIRD for both families under one run dir.
#[derive(Debug, Clone)]
pub struct BirdManager {
    v4: Instance,
    v6: Instance,
    /// Policy only (`--backend none`): no daemon runs; desired configs are not BIRD's.
    policy_only: bool,
    /// The configs last asked for in policy-only mode, reported by `observe` so the agent's
    /// resync does not take "no BIRD" for drift.
    requested: (Option<BirdConfig>, Option<BirdConfig>),
}

impl BirdManager {
    /// Files go to `run_dir` (`bird.cfg`, `bird.ctl`, `bird.pid`, and the `bird6.` ones).
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        let dir: PathBuf = run_dir.into();
        let instance = |v6| Instance {
            v6,
            dir: dir.clone(),
            log_file: None,
            applied: None,
        };
        BirdManager {
            v4: instance(false),
            v6: instance(true),
            policy_only: false,
            requested: (None, None),
        }
    }

    /// The directory of BIRD's files (also where the agent leaves its status notes).
    pub fn run_dir(&self) -> &Path {
        &self.v4.dir
    }

    /// BIRD logs to `<log_dir>/bird.log` and `<log_dir>/bird6.log` (`bird -D`) instead of
    /// syslog; applies to daemons this manager starts.
    #[must_use]
    pub fn with_log_dir(mut self, log_dir: &Path) -> Self {
        self.v4.log_file = Some(log_dir.join("bird.log"));
        self.v6.log_file = Some(log_dir.join("bird6.log"));
        self
    }

    /// Policy only, like the original's `--backend none` / `CALICO_NETWORKING=false`: no
    /// BIRD is started or configured (one left running by an earlier BGP run is stopped on
    /// the first apply).
    #[must_use]
    pub fn policy_only(mut self) -> Self {
        self.policy_only = true;
        self
    }

    /// Brings both daemons to the desired configs; returns the changes made.
    ///
    /// # Errors
    /// The first failure (file write, BIRD refusing the config); the other family is still
    /// applied.
    pub fn apply(
        &mut self,
        runner: &Runner,
        v4: Option<&BirdConfig>,
        v6: Option<&BirdConfig>,
    ) -> Result<Vec<Change>, DataplaneError> {
        if self.policy_only {
            self.requested = (v4.cloned(), v6.cloned());
            let a = self.v4.apply(runner, None);
            let b = self.v6.apply(runner, None);
            let mut changes = a?;
            changes.extend(b?);
            return Ok(changes);
        }
        let a = self.v4.apply(runner, v4);
        let b = self.v6.apply(runner, v6);
        let mut changes = a?;
        changes.extend(b?);
        Ok(changes)
    }

    /// The configs in force (see `Instance::observe`).
    pub fn observe(&self) -> (Option<BirdConfig>, Option<BirdConfig>) {
        if self.policy_only {
            return self.requested.clone();
        }
        (self.v4.observe(), self.v6.observe())
    }

    /// `birdc show protocols` of every running daemon, v4 rows first.
    ///
    /// # Errors
    /// When `birdc` fails on a running daemon.
    pub fn status(&self, runner: &Runner) -> Result<Vec<BgpProtocol>, DataplaneError> {
        let mut rows = Vec::new();
        for inst in [&self.v4, &self.v6] {
            if !inst.running() {
                continue;
            }
            let out = runner.run(
                &format!("reading {} protocols", inst.base()),
                "birdc",
                &["-s", &inst.socket(), "show", "protocols"],
                None,
            )?;
            rows.extend(parse_protocols(&out));
        }
        Ok(rows)
    }

    /// Stops every running daemon (teardown); collects every error.
    pub fn stop(&mut self, runner: &Runner) -> Vec<DataplaneError> {
        let mut errors = Vec::new();
        for inst in [&mut self.v4, &mut self.v6] {
            if inst.running() {
                if let Err(e) = inst.stop(runner) {
                    errors.push(e);
                }
            }
            inst.applied = None;
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_live_bird_counts_as_running() {
        // This test process is alive but is not BIRD (a pid file may name a recycled pid).
        assert!(!is_live_bird(std::process::id()));
        assert!(!is_live_bird(u32::MAX));
        let dir = std::env::temp_dir().join(format!("calico-bird-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bird.pid"), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(running_daemons(&dir), Vec::new());
        assert!(stop_daemons(&dir).is_empty(), "nothing to stop is no error");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn show_protocols_parses_into_rows() {
        let text = "BIRD 2.0.12 ready.\n\
            Name       Proto      Table      State  Since         Info\n\
            device1    Device     ---        up     23:40:01.123  \n\
            Mesh_172_31_250_2 BGP        ---        start  23:40:01.123  Active        Socket: Connection refused\n";
        let rows = parse_protocols(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "device1");
        assert_eq!(rows[0].info, "");
        assert_eq!(rows[1].proto, "BGP");
        assert_eq!(rows[1].state, "start");
        assert_eq!(rows[1].info, "Active Socket: Connection refused");
    }
}
