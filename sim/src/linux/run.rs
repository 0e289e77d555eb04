//! [`LinuxRunner`]: scenario lines on a [`LinuxCluster`], reported like the simulator's
//! runner (`ok <line> <text>` and the detail: calicoctl's output, what settled, the verdict).

use crate::scenario::{Line, LineReport, ScenarioError, Step};

use super::cluster::{ClusterConfig, LinuxCluster};
use super::{settle, traffic, LinuxError};

/// Runs scenario lines on real namespaces; the cluster is torn down when the runner drops.
#[derive(Debug)]
pub struct LinuxRunner {
    cluster: LinuxCluster,
}

impl LinuxRunner {
    /// A fresh cluster (wire namespace and etcd) for one scenario.
    ///
    /// # Errors
    /// As [`LinuxCluster::new`].
    pub fn new(config: ClusterConfig) -> Result<LinuxRunner, LinuxError> {
        Ok(LinuxRunner {
            cluster: LinuxCluster::new(config)?,
        })
    }

    /// The cluster, to inspect namespaces between lines.
    pub fn cluster(&self) -> &LinuxCluster {
        &self.cluster
    }

    /// Runs every line in order, calling `report` after each; stops at the first unmet line.
    ///
    /// # Errors
    /// `Unmet` naming the line (a command's success or failure, a verdict, a failed settle or
    /// setup).
    pub async fn run(
        &mut self,
        lines: &[Line],
        mut report: impl FnMut(&LineReport),
    ) -> Result<(), ScenarioError> {
        for line in lines {
            let detail = self.step(line).await?;
            report(&LineReport {
                line: line.number,
                text: line.text.clone(),
                detail,
            });
        }
        Ok(())
    }

    /// Runs one line and returns its detail.
    ///
    /// # Errors
    /// As [`LinuxRunner::run`].
    pub async fn step(&mut self, line: &Line) -> Result<String, ScenarioError> {
        let unmet = |reason: String| ScenarioError::Unmet {
            line: line.number,
            text: line.text.clone(),
            reason,
        };
        let failed = |e: LinuxError| unmet(e.to_string());
        match &line.step {
            Step::Host { name, ip } => {
                self.cluster.add_host(name, *ip).map_err(failed)?;
                let ns = self.cluster.host_netns(name).unwrap_or_default();
                Ok(format!("host {name} at {ip} (namespace {ns})"))
            }
            Step::Workload { host, name } => {
                self.cluster.add_workload(host, name).map_err(failed)?;
                Ok(format!("namespace {name} on {host}, no network"))
            }
            Step::Calicoctl {
                host,
                args,
                must_fail,
            } => {
                let out = self.cluster.calicoctl(host, args).await.map_err(failed)?;
                let text = if out.success {
                    out.stdout.trim_end().to_string()
                } else {
                    out.stderr.trim_end().to_string()
                };
                match (out.success, must_fail) {
                    (true, false) => Ok(text),
                    (false, true) => Ok(format!("failed as expected: {text}")),
                    (true, true) => Err(unmet(format!("succeeded but should have failed: {text}"))),
                    (false, false) => Err(unmet(format!("failed: {text}"))),
                }
            }
            Step::Settle => {
                let s = settle::settle(&self.cluster).await.map_err(failed)?;
                Ok(format!("settled after {} polls", s.polls))
            }
            Step::Expect {
                src,
                dst,
                probe,
                allow,
            } => {
                settle::settle(&self.cluster).await.map_err(failed)?;
                let outcome = traffic::check(&self.cluster, src, dst, *probe, *allow)
                    .await
                    .map_err(failed)?;
                if outcome.allowed == *allow {
                    Ok(outcome.detail)
                } else {
                    let want = if *allow { "allow" } else { "deny" };
                    Err(unmet(format!("expected {want}, got {}", outcome.detail)))
                }
            }
        }
    }
}
