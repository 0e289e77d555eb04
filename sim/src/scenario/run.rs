//! Running a parsed scenario on a simulated world, line by line.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use calico_backends::Store;
use calico_cli::ctl::{self, BgpPeerStatus, Ctl, NodeStatus};

use super::host_env::{NodeRequests, SimNodeControl, SimResolver};
use super::parse::{Line, Step};
use super::target::{command_outcome, ScenarioTarget};
use crate::{SimError, Verdict, World};

/// Why a scenario stopped. Both variants print their cause: a line is never reported
/// failed without saying why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("line {line}: {text}: {reason}")]
    Unmet {
        line: usize,
        text: String,
        reason: String,
    },
    #[error("line {line}: {text}: {}", causes(source))]
    World {
        line: usize,
        text: String,
        #[source]
        source: SimError,
    },
}

/// An error and every cause under it, `: `-joined, as `{:#}` prints an `anyhow` chain.
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// What one line did, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineReport {
    pub line: usize,
    pub text: String,
    /// calicoctl's output, the expectation's verdict and explanation, or what settled.
    pub detail: String,
}

/// A simulated cluster driven by scenario lines: one `Ctl` per host over the shared store.
pub struct Runner {
    world: World,
    ctls: BTreeMap<String, Ctl>,
    requests: NodeRequests,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("hosts", &self.ctls.keys())
            .finish()
    }
}

impl Runner {
    /// A runner whose hosts share `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Runner {
            world: World::new(store),
            ctls: BTreeMap::new(),
            requests: NodeRequests::default(),
        }
    }

    /// The simulated world, for inspection between lines.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The world, to cut sessions or stop agents between lines.
    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }

    /// Settles the world and publishes every host's agent and BGP status for `calicoctl status`.
    async fn settle(&mut self) -> Result<crate::SettleReport, SimError> {
        let report = self.world.settle().await?;
        for host in self.ctls.keys() {
            let running = self.world.host(host)?.agent_running();
            let bgp_peers = self
                .world
                .bgp_peers(host)?
                .into_iter()
                .map(|p| BgpPeerStatus {
                    protocol: p.protocol.clone(),
                    peer: p.peer_ip.to_string(),
                    peer_type: p.peer_type().to_string(),
                    state: p.bird_state().to_string(),
                    since: String::new(),
                    info: p.info(),
                })
                .collect();
            let detail = if running {
                "simulated agent running"
            } else {
                "agent not running"
            };
            self.requests.publish(
                host,
                NodeStatus {
                    running,
                    detail: detail.into(),
                    bgp_peers,
                },
            );
        }
        Ok(report)
    }

    fn apply_node_requests(&mut self) -> Result<(), SimError> {
        for (host, start) in self.requests.take() {
            if start {
                self.world.start_agent(&host)?;
            } else {
                self.world.stop_agent(&host)?;
            }
        }
        Ok(())
    }
}

#[async_trait(?Send)]
impl ScenarioTarget for Runner {
    async fn step(&mut self, line: &Line) -> Result<String, ScenarioError> {
        let world_err = |source| ScenarioError::World {
            line: line.number,
            text: line.text.clone(),
            source,
        };
        let unmet = |reason: String| ScenarioError::Unmet {
            line: line.number,
            text: line.text.clone(),
            reason,
        };
        match &line.step {
            Step::Host { name, ip, ip6 } => {
                let host = self
                    .world
                    .add_dual_stack_host(name, *ip, *ip6)
                    .map_err(world_err)?;
                let dataplane = host.dataplane().clone();
                let ctl = Ctl {
                    store: self.world.store().clone(),
                    hostname: name.clone(),
                    plumbing: Arc::new(dataplane.clone()),
                    resolver: Arc::new(SimResolver { dataplane }),
                    node: Arc::new(SimNodeControl {
                        host: name.clone(),
                        requests: self.requests.clone(),
                    }),
                };
                self.ctls.insert(name.clone(), ctl);
                match ip6 {
                    Some(ip6) => Ok(format!("host {name} at {ip} and {ip6}")),
                    None => Ok(format!("host {name} at {ip}")),
                }
            }
            Step::External { name, ip } => {
                self.world.add_external(name, *ip).map_err(world_err)?;
                Ok(format!("external machine {name} at {ip}"))
            }
            Step::Workload { host, name } => {
                self.world.add_workload(host, name).map_err(world_err)?;
                Ok(format!("namespace {name} on {host}, no network"))
            }
            Step::Calicoctl {
                host,
                args,
                must_fail,
                stdin,
            } => {
                let ctl = self
                    .ctls
                    .get(host)
                    .ok_or_else(|| unmet(format!("no host {host} declared")))?;
                let stdin = stdin.as_deref().unwrap_or("");
                // calicoctl hands a what-if to the calico-sim binary; in here it is answered
                // in this process, on a copy of the scenario's store.
                let result = if ctl::whatif::is_what_if(args) {
                    crate::whatif::run_in_process(ctl, args, stdin).await
                } else {
                    ctl::run_with_input(ctl, args, stdin).await
                };
                self.apply_node_requests().map_err(world_err)?;
                let (succeeded, text) = match result {
                    Ok(out) => (true, out.trim_end().to_string()),
                    Err(err) => (false, err.to_string()),
                };
                command_outcome(succeeded, *must_fail, &text).map_err(unmet)
            }
            Step::Settle => {
                let report = self.settle().await.map_err(world_err)?;
                Ok(format!("settled in {} rounds", report.rounds))
            }
            Step::Expect {
                src,
                dst,
                probe,
                allow,
            } => {
                self.settle().await.map_err(world_err)?;
                let walk = self.world.send(src, dst, *probe).map_err(world_err)?;
                let want = if *allow {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                };
                if walk.verdict == want {
                    let why = walk
                        .deciding
                        .as_deref()
                        .unwrap_or("no rule on the way decided");
                    Ok(format!("{}: {why}", walk.verdict))
                } else {
                    Err(unmet(format!(
                        "expected {want}, got {}\n{walk}",
                        walk.verdict
                    )))
                }
            }
        }
    }
}
