//! `calico-node`: the node agent of calico-rs. Reads the datastore (sled served to calicoctl
//! over `<data-dir>/calico.sock`, or etcd), reconciles this host's dataplane until SIGTERM or
//! SIGINT, and leaves the dataplane as it is on exit (BIRD included: `calicoctl node stop`
//! stops it).
//!
//! The pid file is the readiness signal: it is written once the datastore is open (and, on
//! sled, its socket is bound), so `calicoctl node` returns only when calicoctl can reach
//! the store through the agent.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use calico_backends::proxy::{database_path, socket_path, StoreServer};
use calico_backends::{EtcdConfig, EtcdStore, SledStore, Store};
use calico_cli::agent::{metrics, Agent, AgentConfig};
use calico_dataplane::linux::{BirdManager, LinuxDataplane};
use calico_dataplane::sim::{SimDataplane, WireConfig};
use calico_dataplane::Dataplane;
use clap::{Parser, ValueEnum};
use tokio::sync::watch;

/// Which datastore holds the cluster's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatastoreKind {
    /// Embedded sled database under --data-dir (one machine).
    Sled,
    /// etcd v3 from ETCD_ENDPOINTS or ETCD_AUTHORITY.
    Etcd,
}

/// Which kernel the agent programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DataplaneKind {
    /// An in-memory simulated kernel (dry runs, demos, tests).
    Sim,
    /// The host's kernel: iptables, ipset, routes, BIRD.
    Linux,
}

/// How routes reach other hosts (the original's `--backend` / `CALICO_NETWORKING_BACKEND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// BIRD carries this host's workload routes over BGP.
    Bird,
    /// Policy only: no BIRD is started or configured.
    None,
}

/// The calico-rs node agent.
#[derive(Debug, Parser)]
#[command(name = "calico-node", version)]
struct Args {
    /// This host's name as registered in the datastore (default: the system hostname).
    #[arg(long)]
    hostname: Option<String>,
    #[arg(long, env = "CALICO_DATASTORE", value_enum, default_value = "sled")]
    datastore: DatastoreKind,
    /// Where the sled database and its socket live.
    #[arg(long, env = "CALICO_DATA_DIR", default_value = "/var/lib/calico")]
    data_dir: PathBuf,
    /// `linux` programs this host's kernel (needs root); `sim` an in-memory one.
    #[arg(long, value_enum, default_value = "linux")]
    dataplane: DataplaneKind,
    /// Print the changes the agent would make instead of making them.
    #[arg(long)]
    dry_run: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9091); off when absent.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Seconds between drift checks against the dataplane.
    #[arg(long, default_value_t = 60)]
    resync_interval: u64,
    /// Write the process id here while running.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Log here instead of stderr.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Print the completion script for this shell and exit (scripts/install-completion).
    #[arg(long, value_name = "SHELL")]
    completion: Option<clap_complete::Shell>,
    /// BIRD logs here (`bird.log`, `bird6.log`) instead of to syslog.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// `bird` runs BGP; `none` is policy only (no BIRD).
    #[arg(
        long,
        env = "CALICO_NETWORKING_BACKEND",
        value_enum,
        default_value = "bird"
    )]
    backend: Backend,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(shell) = args.completion {
        let mut cmd = <Args as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "calico-node", &mut std::io::stdout());
        return Ok(());
    }
    init_logging(args.log_file.as_deref())?;
    let result = run(&args).await;
    if let Some(pid_file) = &args.pid_file {
        // Only our own: an agent that failed to start must not unregister the one running.
        let ours = std::fs::read_to_string(pid_file)
            .is_ok_and(|pid| pid.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(pid_file);
        }
    }
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "calico-node failed");
    }
    result
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let hostname = match &args.hostname {
        Some(h) => h.clone(),
        None => system_hostname()?,
    };
    // The agent reads and writes `/calico/v1/host/<hostname>/...`.
    calico_core::names::validate_hostname(&hostname)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });

    let (store, server) = open_store(args).await?;
    let server_task = server.map(|server| {
        tracing::info!(socket = %server.path().display(), "serving the datastore to calicoctl");
        tokio::spawn(server.serve(stopped()))
    });
    // Ready: calicoctl can reach the store (the socket is bound; connections queue until
    // the server task accepts them).
    if let Some(pid_file) = &args.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pid file {}", pid_file.display()))?;
    }

    match args.dataplane {
        DataplaneKind::Sim => {
            let dataplane = SimDataplane::new(&hostname, WireConfig::eth0([]));
            run_agent(args, store, dataplane, &hostname, &stopped).await?;
        }
        DataplaneKind::Linux => {
            let mut bird = BirdManager::new(args.data_dir.join("bird"));
            if let Some(dir) = &args.log_dir {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating log dir {}", dir.display()))?;
                bird = bird.with_log_dir(dir);
            }
            if args.backend == Backend::None {
                tracing::info!("policy only (--backend none): no BIRD");
                bird = bird.policy_only();
            }
            let dataplane = LinuxDataplane::with_bird(bird);
            run_agent(args, store, dataplane, &hostname, &stopped).await?;
        }
    }
    if let Some(task) = server_task {
        let _ = task.await;
    }
    Ok(())
}

/// Runs the reconcile loop (and the metrics endpoint) until `stopped` resolves.
async fn run_agent<D, F, Fut>(
    args: &Args,
    store: Arc<dyn Store>,
    dataplane: D,
    hostname: &str,
    stopped: &F,
) -> anyhow::Result<()>
where
    D: Dataplane,
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let config = AgentConfig {
        resync_interval: Duration::from_secs(args.resync_interval.max(1)),
        dry_run: args.dry_run,
        ..AgentConfig::default()
    };
    let mut agent = Agent::new(store, dataplane, hostname.to_owned(), config);
    if let Some(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics address {addr}"))?;
        tracing::info!(%addr, "serving metrics");
        tokio::spawn(metrics::serve(listener, agent.metrics(), stopped()));
    }
    tracing::info!(host = %hostname, dataplane = ?args.dataplane, "calico-node starting");
    agent.run(stopped()).await;
    Ok(())
}

/// The datastore, and for sled the server sharing it with calicoctl.
async fn open_store(args: &Args) -> anyhow::Result<(Arc<dyn Store>, Option<StoreServer>)> {
    match args.datastore {
        DatastoreKind::Etcd => {
            let config = EtcdConfig::from_env().context("reading the etcd configuration")?;
            let store = EtcdStore::connect(config)
                .await
                .context("connecting to etcd")?;
            Ok((Arc::new(store), None))
        }
        DatastoreKind::Sled => {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
            let db = database_path(&args.data_dir);
            let store: Arc<dyn Store> = Arc::new(
                open_sled(&db)
                    .await
                    .with_context(|| format!("opening the sled database {}", db.display()))?,
            );
            let server = StoreServer::bind(socket_path(&args.data_dir), Arc::clone(&store))
                .await
                .context("serving the datastore socket")?;
            Ok((store, Some(server)))
        }
    }
}

/// Opens the sled database, retrying for a few seconds while another process (a previous
/// agent still exiting, a calicoctl command) holds its lock.
async fn open_sled(db: &Path) -> Result<SledStore, calico_backends::StoreError> {
    let mut attempts = 0;
    loop {
        match SledStore::open(db) {
            Ok(store) => return Ok(store),
            Err(e) if attempts < 50 => {
                attempts += 1;
                tracing::debug!(error = %e, "sled database busy; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; waiting for Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn system_hostname() -> anyhow::Result<String> {
    if let Ok(h) = std::env::var("HOSTNAME") {
        if !h.trim().is_empty() {
            return Ok(h.trim().to_owned());
        }
    }
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the system hostname (pass --hostname)")?;
    Ok(h.trim().to_owned())
}

fn init_logging(log_file: Option<&Path>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CALICO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_file {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating log dir {}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            builder.with_ansi(false).with_writer(Arc::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
