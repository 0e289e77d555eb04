//! The BIRD process manager: one BIRD 2 daemon per family (`bird.cfg` / `bird6.cfg` in the run
//! dir, like BIRD and BIRD6 of the original), each with its own control socket and pid file.
//!
//! Apply writes the config rendered by `render_bird` when its text changed and reloads it
//! (`birdc configure`), starts the daemon when it is not running, and stops it (`birdc down`)
//! when the family has no config any more.

use std::path::{Path, PathBuf};

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
    applied: Option<BirdConfig>,
}

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

    /// Whether the pid file names a live process.
    fn running(&self) -> bool {
        let Ok(pid) = std::fs::read_to_string(self.path("pid")) else {
            return false;
        };
        let pid = pid.trim();
        !pid.is_empty()
            && pid.chars().all(|c| c.is_ascii_digit())
            && Path::new("/proc").join(pid).join("status").exists()
            && std::fs::read_to_string(Path::new("/proc").join(pid).join("status"))
                .map(|s| {
                    !s.lines()
                        .any(|l| l.starts_with("State:") && l.contains("zombie"))
                })
                .unwrap_or(false)
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
            runner.run(
                &format!("starting {name}"),
                "bird",
                &["-c", &cfg_path, "-s", &self.socket(), "-P", &pid],
                None,
            )?;
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

    fn stop(&self, runner: &Runner) -> Result<(), DataplaneError> {
        runner.run(
            &format!("stopping {}", self.base()),
            "birdc",
            &["-s", &self.socket(), "down"],
            None,
        )?;
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

/// BIRD for both families under one run dir.
#[derive(Debug, Clone)]
pub struct BirdManager {
    v4: Instance,
    v6: Instance,
}

impl BirdManager {
    /// Files go to `run_dir` (`bird.cfg`, `bird.ctl`, `bird.pid`, and the `bird6.` ones).
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        let dir: PathBuf = run_dir.into();
        BirdManager {
            v4: Instance {
                v6: false,
                dir: dir.clone(),
                applied: None,
            },
            v6: Instance {
                v6: true,
                dir,
                applied: None,
            },
        }
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
        let a = self.v4.apply(runner, v4);
        let b = self.v6.apply(runner, v6);
        let mut changes = a?;
        changes.extend(b?);
        Ok(changes)
    }

    /// The configs in force (see `Instance::observe`).
    pub fn observe(&self) -> (Option<BirdConfig>, Option<BirdConfig>) {
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
