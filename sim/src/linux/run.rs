//! [`LinuxRunner`]: scenario lines on a [`LinuxCluster`], reported like the simulator's
//! runner (`ok <line> <text>` and the detail: calicoctl's output, what settled, the verdict).

use async_trait::async_trait;

use crate::scenario::{command_outcome, Line, ScenarioError, ScenarioTarget, Step};

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
}

#[async_trait(?Send)]
impl ScenarioTarget for LinuxRunner {
    async fn step(&mut self, line: &Line) -> Result<String, ScenarioError> {
        let unmet = |reason: String| ScenarioError::Unmet {
            line: line.number,
            text: line.text.clone(),
            reason,
        };
        let failed = |e: LinuxError| unmet(e.to_string());
        match &line.step {
            Step::Host { name, ip, ip6 } => {
                self.cluster.add_host(name, *ip, *ip6).map_err(failed)?;
                let ns = self.cluster.host_netns(name).unwrap_or_default();
                match ip6 {
                    Some(ip6) => Ok(format!("host {name} at {ip} and {ip6} (namespace {ns})")),
                    None => Ok(format!("host {name} at {ip} (namespace {ns})")),
                }
            }
            Step::External { name, ip } => {
                self.cluster.add_external(name, *ip).map_err(failed)?;
                Ok(format!("external machine {name} at {ip}"))
            }
            Step::Workload { host, name } => {
                self.cluster.add_workload(host, name).map_err(failed)?;
                Ok(format!("namespace {name} on {host}, no network"))
            }
            Step::Calicoctl {
                host,
                args,
                must_fail,
                stdin,
            } => {
                let out = self
                    .cluster
                    .calicoctl_with_input(host, args, stdin.as_deref())
                    .await
                    .map_err(failed)?;
                let text = if out.success {
                    out.stdout.trim_end().to_string()
                } else {
                    out.stderr.trim_end().to_string()
                };
                command_outcome(out.success, *must_fail, &text).map_err(unmet)
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
