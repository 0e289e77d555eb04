//! Test helper for `tests/sled_crash.rs`: opens a `SledStore` and writes keys
//! `/crash/<i>` = `value-<i>` for `i` in `start..start + count`, printing `ack <i> <revision>` after each
//! write returned (and so was flushed). The test kills it mid-stream and checks every
//! acknowledged key survived.
//!
//! Usage: `sled-crash-writer <db-path> <count> [<start>]` (`start` defaults to 0; the
//! repeated-crash test resumes each run where the last acknowledged one stopped).

use std::io::Write;
use std::process::ExitCode;

use calico_backends::{SledStore, Store};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(count)) = (args.get(1), args.get(2).and_then(|c| c.parse::<u64>().ok()))
    else {
        eprintln!("usage: sled-crash-writer <db-path> <count> [<start>]");
        return ExitCode::from(2);
    };
    let Some(start) = args.get(3).map_or(Some(0), |s| s.parse::<u64>().ok()) else {
        eprintln!("usage: sled-crash-writer <db-path> <count> [<start>]");
        return ExitCode::from(2);
    };
    let store = match SledStore::open(path) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("opening {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    for i in start..start.saturating_add(count) {
        let revision = match store
            .put(&format!("/crash/{i:08}"), format!("value-{i}").into_bytes())
            .await
        {
            Ok(revision) => revision,
            Err(e) => {
                eprintln!("writing key {i}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if writeln!(stdout, "ack {i} {revision}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
