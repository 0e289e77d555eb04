//! A throwaway etcd server for tests and benches: its own temp data dir, free ports on
//! 127.0.0.1, `--unsafe-no-fsync`; restartable on the same data and ports; killed (by the PID
//! we started, nothing else) on drop. [`EtcdServer::start_tls`] serves clients over TLS and
//! requires client certificates (`--client-cert-auth`).
//!
//! When no `etcd` binary exists, `start` returns `None` after printing
//! "skipping: install etcd-server", unless `CI` is set, where it panics so CI cannot pass
//! without running the etcd tests.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "etcd_process.rs"]
mod etcd_process;
use etcd_process::free_ports;

/// How long a fresh etcd may take to answer (it is usually ready in about a second).
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

/// PEM files for an etcd serving clients over TLS: its own certificate and key, the CA it
/// trusts for client certificates, and a client certificate that CA signed (for the
/// readiness probe).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trusted_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// One etcd process we started, and what it needs to restart.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<ServerTls>,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers; `None` (after a message) when etcd is not
    /// installed and `CI` is unset.
    pub async fn start() -> Option<EtcdServer> {
        Self::start_with(None).await
    }

    /// As [`start`](Self::start), serving `https://` client URLs with `tls` and requiring
    /// client certificates signed by its trusted CA.
    pub async fn start_tls(tls: ServerTls) -> Option<EtcdServer> {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<ServerTls>) -> Option<EtcdServer> {
        let binary = etcd_process::binary_or_skip()?;
        let dir = tempfile::tempdir().expect("creating a temp dir for etcd");
        let [client_port, peer_port] = free_ports(2)[..] else {
            unreachable!("free_ports(2) returns two ports")
        };
        let mut server = EtcdServer {
            binary,
            dir,
            client_port,
            peer_port,
            tls,
            child: None,
        };
        server.spawn().await;
        Some(server)
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The PID of the running etcd, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills etcd (SIGKILL to our child only) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data dir and ports, waiting until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Restarts etcd on the same data dir but a fresh client port, returning its endpoint:
    /// clients of [`endpoint`](Self::endpoint) keep failing meanwhile (to change data behind a
    /// reconnecting watcher's back). [`restart`](Self::restart) returns to the usual port.
    pub async fn restart_hidden(&mut self) -> String {
        self.stop();
        let usual = self.client_port;
        self.client_port = free_ports(1)[0];
        self.spawn().await;
        let hidden = self.endpoint();
        self.client_port = usual;
        hidden
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    async fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the etcd log");
        let mut command = Command::new(&self.binary);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.trusted_ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(&data)
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
            .args(["--initial-cluster", &format!("default={peer}")])
            .arg("--unsafe-no-fsync")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the etcd log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_healthy(&client).await;
    }

    async fn wait_healthy(&mut self, endpoint: &str) {
        let tls = self.tls.clone();
        let log = self.log_path();
        let options = || probe_options(tls.as_ref());
        let waited =
            etcd_process::wait_answering(&mut self.child, endpoint, options, HEALTHY_WITHIN, &log)
                .await;
        if let Err(why) = waited {
            self.stop();
            panic!("{why}");
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the readiness probe connects: short timeouts, and the client certificate in `tls`
/// when the server requires one.
fn probe_options(tls: Option<&ServerTls>) -> etcd_client::ConnectOptions {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_millis(500));
    let Some(tls) = tls else {
        return options;
    };
    let read = |path: &Path| {
        std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    options.with_tls(
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.trusted_ca)))
            .identity(etcd_client::Identity::from_pem(
                read(&tls.client_cert),
                read(&tls.client_key),
            )),
    )
}
