//! Crash test: a child process writes to a `SledStore` and is SIGKILLed mid-stream; every
//! write it acknowledged must be there after a reopen, and the revision counter must go on
//! from where the acknowledged writes left it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use calico_backends::{SledStore, Store};

/// Acknowledgements to wait for before the kill.
const KILL_AFTER: u64 = 200;
/// Keys the child would write if left alone (it never gets there).
const TOTAL: u64 = 100_000;

#[tokio::test]
async fn sigkill_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sled-crash-writer"))
        .arg(&path)
        .arg(TOTAL.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning sled-crash-writer");
    let stdout = child.stdout.take().expect("child stdout is piped");
    let mut acks = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reading child stdout");
        let mut fields = line.split_whitespace();
        let (Some("ack"), Some(i), Some(rev)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!("unexpected line from the writer: {line:?}");
        };
        acks.push((i.parse::<u64>().unwrap(), rev.parse::<i64>().unwrap()));
        if acks.len() as u64 == KILL_AFTER {
            child.kill().expect("SIGKILL the writer");
            break;
        }
    }
    child.wait().expect("reaping the writer");
    assert_eq!(
        acks.len() as u64,
        KILL_AFTER,
        "the writer died before {KILL_AFTER} acks"
    );

    let store = SledStore::open(&path).unwrap();
    let mut last_rev = 0;
    for &(i, rev) in &acks {
        let kv = store
            .get(&format!("/crash/{i:08}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged key {i} lost"));
        assert_eq!(
            (kv.value, kv.mod_revision),
            (format!("value-{i}").into_bytes(), rev)
        );
        last_rev = rev;
    }
    // Writes after the last ack may or may not have survived, but the counter must cover
    // whatever did, and every key present must be consistent with it.
    let (kvs, at) = store.list("/crash/").await.unwrap();
    assert!(
        at >= last_rev,
        "revision {at} went back before the last ack {last_rev}"
    );
    assert!(kvs.len() >= acks.len());
    assert!(
        kvs.iter().all(|kv| kv.mod_revision <= at),
        "a key is newer than the revision counter"
    );
    let next = store
        .put("/crash/after", b"restart".to_vec())
        .await
        .unwrap();
    assert!(next > at, "new write got revision {next}, not above {at}");
}
