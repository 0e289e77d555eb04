//! `calico-sim`: run scenario files on the simulator, or the narrated seed demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use calico_backends::{MemStore, SledStore, Store};
use calico_sim::scenario::{self, Runner};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "calico-sim",
    version,
    about = "Simulate a calico-rs cluster in one process"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenario files (see SCENARIOS.md) on the simulator; exit 1 at the first unmet line.
    Run {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print only failures and the summary.
        #[arg(short, long)]
        quiet: bool,
    },
    /// The seed's two-host lifecycle on embedded sled and the simulator, narrated.
    Demo {
        /// Keep the sled database here instead of a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { files, quiet } => run_files(&files, quiet).await,
        Command::Demo { data_dir } => demo(data_dir).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_files(files: &[PathBuf], quiet: bool) -> anyhow::Result<()> {
    let mut passed = 0;
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("reading scenario {}: {e}", file.display()))?;
        let lines = scenario::parse(&text)
            .map_err(|e| anyhow::anyhow!("parsing scenario {}: {e}", file.display()))?;
        println!("== {}", file.display());
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let mut runner = Runner::new(store);
        runner
            .run(&lines, |r| {
                if !quiet {
                    println!("ok   {:>3}  {}", r.line, r.text);
                    for detail in r.detail.lines().filter(|l| !l.is_empty()) {
                        println!("           {detail}");
                    }
                }
            })
            .await
            .map_err(|e| anyhow::anyhow!("FAIL {}: {e}", file.display()))?;
        passed += 1;
    }
    println!("{passed} passed, 0 failed");
    Ok(())
}

async fn demo(data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = data_dir.unwrap_or_else(|| temp.path().join("calico"));
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir)?);
    println!(
        "calico-rs demo: the seed's lifecycle on embedded sled ({}) and the simulator",
        dir.display()
    );
    let mut stdout = std::io::stdout();
    calico_sim::demo::run(store, &mut stdout).await
}
