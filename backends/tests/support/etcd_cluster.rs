//! A throwaway etcd cluster of N members on 127.0.0.1 (free ports, one temp dir,
//! `--unsafe-no-fsync`), for the reliability tests: members can be SIGKILLed and restarted
//! on their data, and the leader found. Every process is one we started, killed by its PID
//! on drop. A single-member cluster is a plain etcd server that can be stopped and started.
//!
//! When no `etcd` binary exists, `start` returns `None` after printing why, unless `CI` is
//! set, where it panics so CI cannot pass without running these tests.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "etcd_process.rs"]
mod etcd_process;
use etcd_process::free_ports;

/// How long a member may take to answer after starting.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// The cluster's processes and what they need to restart.
#[derive(Debug)]
pub struct EtcdCluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each answers a read.
    pub async fn start(n: usize) -> Option<EtcdCluster> {
        let binary = etcd_process::binary_or_skip()?;
        let ports = free_ports(2 * n);
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            binary,
            dir: tempfile::tempdir().expect("creating a temp dir for etcd"),
            members,
        };
        for i in 0..n {
            cluster.spawn(i, "new");
        }
        for i in 0..n {
            cluster.wait_healthy(i).await;
        }
        Some(cluster)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every client URL, comma-separated, as `ETCD_ENDPOINTS` takes them.
    pub fn endpoints_env(&self) -> String {
        self.endpoints().join(",")
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Whether member `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// SIGKILLs member `i` (our child only) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data dir and ports, waiting until it answers.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
        self.wait_healthy(i).await;
    }

    /// The index of the member that is leader now, asked of the running members.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if !self.is_running(i) {
                continue;
            }
            let Ok(Ok(mut client)) = tokio::time::timeout(
                Duration::from_secs(2),
                etcd_client::Client::connect([self.endpoint(i)], None),
            )
            .await
            else {
                continue;
            };
            let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(2), client.status()).await
            else {
                continue;
            };
            let me = status.header().map(|h| h.member_id());
            if me == Some(status.leader()) {
                return Some(i);
            }
        }
        None
    }

    /// Waits until some running member is leader and returns it.
    pub async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            if let Some(i) = self.leader().await {
                return i;
            }
            assert!(Instant::now() < deadline, "no etcd leader elected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("opening the etcd log");
        let child = Command::new(&self.binary)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "calico-reliability"])
            .arg("--unsafe-no-fsync")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the etcd log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.members[i].child = Some(child);
    }

    async fn wait_healthy(&mut self, i: usize) {
        let endpoint = self.endpoint(i);
        let log = self.log_path(i);
        let options = || {
            etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_millis(1000))
        };
        let child = &mut self.members[i].child;
        let waited =
            etcd_process::wait_answering(child, &endpoint, options, HEALTHY_WITHIN, &log).await;
        if let Err(why) = waited {
            panic!("{why}");
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
