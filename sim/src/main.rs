//! `calico-sim`: run scenario files on the simulator or on real network namespaces
//! (`--dataplane linux`), or the narrated seed demo; answer `calicoctl what-if` (`what-if`).
//! `probe` is the hidden traffic helper the Linux runner starts inside namespaces.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use calico_backends::{EtcdStore, MemStore, SledStore, Store};
use calico_sim::linux::probe::{self, Transport};
use calico_sim::linux::{ClusterConfig, LinuxRunner};
use calico_sim::scenario::{self, LineReport, Runner, ScenarioTarget};
use calico_sim::whatif;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "calico-sim",
    version,
    about = "Simulate a calico-rs cluster in one process, or run it on network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where scenario files run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dataplane {
    /// In-memory hosts and a simulated wire, in this process.
    Sim,
    /// Network namespaces of this machine (root): real etcd, calico-node, BIRD and packets.
    Linux,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenario files (see SCENARIOS.md); exit 1 at the first unmet line.
    Run {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print only failures and the summary.
        #[arg(short, long)]
        quiet: bool,
        /// `sim` (default) or `linux` (namespaces on this machine; needs root).
        #[arg(long, value_enum, default_value = "sim")]
        dataplane: Dataplane,
    },
    /// The seed's two-host lifecycle on embedded sled and the simulator, narrated.
    Demo {
        /// Keep the sled database here instead of a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Answer a `calicoctl what-if` request read as JSON on stdin (calicoctl starts this):
    /// print the flows the proposed command would change; exit 3 when `--fail-on` matched.
    WhatIf {
        /// Walk every flow instead of only those the change can affect (slow; a check).
        #[arg(long)]
        full: bool,
    },
    /// Traffic helper of `--dataplane linux`, run inside namespaces.
    #[command(hide = true, subcommand)]
    Probe(ProbeCommand),
    /// Settle helper of `--dataplane linux`: print every key of the etcd `ETCD_ENDPOINTS`
    /// names as JSON, run in the namespace that reaches it.
    #[command(hide = true)]
    StoreDump,
}

#[derive(Subcommand, Debug)]
enum ProbeCommand {
    /// Serve a port until killed: answer TCP connections, echo UDP datagrams.
    Listen { transport: Transport, port: u16 },
    /// Exit 0 when `ip:port` answers within the timeout, 1 otherwise.
    Connect {
        transport: Transport,
        ip: IpAddr,
        port: u16,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            files,
            quiet,
            dataplane: Dataplane::Sim,
        } => run_files(&files, quiet).await,
        Command::Run {
            files,
            quiet,
            dataplane: Dataplane::Linux,
        } => {
            // Dropping the run on a signal drops its cluster, which removes what it made.
            let signal = interrupted();
            tokio::select! {
                biased;
                signal = signal => Err(anyhow::anyhow!("{signal} received; everything created was removed")),
                result = run_files_linux(&files, quiet) => result,
            }
        }
        Command::Demo { data_dir } => demo(data_dir).await,
        Command::StoreDump => store_dump().await,
        Command::WhatIf { full } => match what_if(full).await {
            Ok(gate) if gate => {
                return ExitCode::from(calico_cli::ctl::whatif::GATE_EXIT_CODE as u8);
            }
            other => other.map(|_| ()),
        },
        Command::Probe(ProbeCommand::Listen { transport, port }) => {
            probe::listen(transport, port).map_err(|e| anyhow::anyhow!("listening on {port}: {e}"))
        }
        Command::Probe(ProbeCommand::Connect {
            transport,
            ip,
            port,
            timeout_ms,
        }) => {
            let timeout = Duration::from_millis(timeout_ms.max(1));
            return if probe::connect(transport, ip, port, timeout) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves with the name of the first SIGINT or SIGTERM. The handlers are installed when
/// this is called, before the run starts, so a signal during blocking setup is not lost.
fn interrupted() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}

fn print_report(r: &LineReport, quiet: bool) {
    if !quiet {
        println!("ok   {:>3}  {}", r.line, r.text);
        for detail in r.detail.lines().filter(|l| !l.is_empty()) {
            println!("           {detail}");
        }
    }
}

fn read_scenario(file: &PathBuf) -> anyhow::Result<Vec<scenario::Line>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("reading scenario {}: {e}", file.display()))?;
    scenario::parse(&text).map_err(|e| anyhow::anyhow!("parsing scenario {}: {e}", file.display()))
}

async fn run_files(files: &[PathBuf], quiet: bool) -> anyhow::Result<()> {
    let mut passed = 0;
    for file in files {
        let lines = read_scenario(file)?;
        println!("== {}", file.display());
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let mut runner = Runner::new(store);
        runner
            .run(&lines, |r| print_report(r, quiet))
            .await
            .map_err(|e| anyhow::anyhow!("FAIL {}: {e}", file.display()))?;
        passed += 1;
    }
    println!("{passed} passed, 0 failed");
    Ok(())
}

async fn run_files_linux(files: &[PathBuf], quiet: bool) -> anyhow::Result<()> {
    let config = ClusterConfig::discover()?;
    // Every file is read and parsed before any namespace is made.
    let scenarios = files
        .iter()
        .map(|f| read_scenario(f).map(|lines| (f, lines)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut passed = 0;
    for (file, lines) in scenarios {
        println!("== {} (linux)", file.display());
        let mut runner = LinuxRunner::new(config.clone())
            .map_err(|e| anyhow::anyhow!("setting up for {}: {e}", file.display()))?;
        runner
            .run(&lines, |r| print_report(r, quiet))
            .await
            .map_err(|e| anyhow::anyhow!("FAIL {}: {e}", file.display()))?;
        passed += 1;
    }
    println!("{passed} passed, 0 failed");
    Ok(())
}

async fn store_dump() -> anyhow::Result<()> {
    let store = EtcdStore::connect_from_env().await?;
    println!("{}", calico_sim::linux::predict::dump(&store).await?);
    Ok(())
}

/// Reads the request on stdin, prints the answer; `Ok(true)` when `--fail-on` matched.
async fn what_if(full: bool) -> anyhow::Result<bool> {
    use std::io::Read;
    let mut body = String::new();
    std::io::stdin()
        .read_to_string(&mut body)
        .map_err(|e| anyhow::anyhow!("reading the what-if request on stdin: {e}"))?;
    let request: calico_cli::ctl::whatif::WhatIfRequest = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("reading the what-if request on stdin: {e}"))?;
    if full {
        let report = whatif::evaluate(&request, whatif::Scope::Full).await?;
        print!("{}", report.text());
        return Ok(report.gate(request.fail_on));
    }
    let (text, gate) = whatif::answer(&request).await?;
    print!("{text}");
    Ok(gate)
}

async fn demo(data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = data_dir.unwrap_or_else(|| temp.path().join("calico"));
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir)?);
    println!(
        "calico-sim demo: the seed's lifecycle on embedded sled ({}) and the simulator",
        dir.display()
    );
    let mut stdout = std::io::stdout();
    calico_sim::demo::run(store, &mut stdout).await
}
