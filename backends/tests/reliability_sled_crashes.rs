//! Embedded store crashes, repeated: a writer process is SIGKILLed mid-stream
//! [`ROUNDS`] times over the same sled database, after a pseudo-random number of
//! acknowledged writes each time. After every kill the database must reopen, hold every
//! write ever acknowledged (value and revision), and keep its revision counter above them.
//! RELIABILITY.md reports the totals this test prints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use calico_backends::{SledStore, Store};

/// SIGKILLs of the writer.
const ROUNDS: u64 = 100;
/// Keys a writer would write if left alone (it never gets there).
const PER_RUN: u64 = 100_000;

/// A small xorshift: which ack to kill after varies, yet every run of the test is the same.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Runs one writer from `start`, SIGKILLs it after `kill_after` acks (or at once when 0, so
/// some kills land while sled is still opening), and returns the acks it printed.
fn crash_once(path: &std::path::Path, start: u64, kill_after: u64) -> Vec<(u64, i64)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sled-crash-writer"))
        .arg(path)
        .arg(PER_RUN.to_string())
        .arg(start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sled-crash-writer");
    let stdout = child.stdout.take().expect("child stdout is piped");
    let mut acks = Vec::new();
    if kill_after > 0 {
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reading child stdout");
            let mut fields = line.split_whitespace();
            let (Some("ack"), Some(i), Some(rev)) = (fields.next(), fields.next(), fields.next())
            else {
                panic!("unexpected line from the writer: {line:?}");
            };
            acks.push((i.parse::<u64>().unwrap(), rev.parse::<i64>().unwrap()));
            if acks.len() as u64 == kill_after {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL the writer");
    let status = child.wait().expect("reaping the writer");
    assert!(
        kill_after == 0 || acks.len() as u64 == kill_after,
        "the writer stopped after {} acks ({status}): {}",
        acks.len(),
        std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default()
    );
    acks
}

#[tokio::test]
async fn a_hundred_sigkills_lose_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut acked: Vec<(u64, i64)> = Vec::new();
    let mut start = 0;
    for round in 0..ROUNDS {
        // 0..=40 acks: a tenth of the kills come before the first write returns.
        let kill_after = next(&mut seed) % 41;
        let acks = crash_once(&path, start, kill_after);
        if let Some(&(last, _)) = acks.last() {
            start = last + 1;
        }
        acked.extend(acks);

        let store = SledStore::open(&path)
            .unwrap_or_else(|e| panic!("round {round}: the database does not reopen: {e}"));
        let (kvs, at) = store.list("/crash/").await.unwrap();
        let found: std::collections::BTreeMap<String, (Vec<u8>, i64)> = kvs
            .into_iter()
            .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
            .collect();
        for &(i, rev) in &acked {
            let key = format!("/crash/{i:08}");
            let (value, mod_revision) = found
                .get(&key)
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} lost"));
            // An unacknowledged rewrite of the same key (the next run starts after the last
            // ack) never happens, so the revision is exactly the acknowledged one.
            assert_eq!(
                (value.as_slice(), *mod_revision),
                (format!("value-{i}").as_bytes(), rev),
                "round {round}: {key}"
            );
            assert!(
                at >= rev,
                "round {round}: revision {at} is behind ack {rev}"
            );
        }
        // Writes after the last ack may have survived; the next run overwrites them.
        start = start.max(found.len() as u64);
        drop(store);
    }
    println!(
        "sled crashes: {ROUNDS} SIGKILLs, {} acknowledged writes, 0 lost",
        acked.len()
    );
    assert!(acked.len() > 1000, "too few writes to mean anything");
}
