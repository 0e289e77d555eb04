//! EtcdStore throughput against a local etcd (started like the tests start it), compared with
//! `etcdctl` doing the same work. Run with `cargo bench -p calico-backends --bench etcd`.
//!
//! Measures: 10,000 creates of endpoint-sized values sequentially and 32-way concurrently, a
//! list of the resulting 20,000 keys, and watch throughput (live and replayed). `etcdctl` is one
//! process per put, so its put rate is measured on a smaller N and extrapolated.

#[path = "../tests/support/etcd_server.rs"]
mod etcd_server;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_backends::{EtcdConfig, EtcdStore, Store, WatchEvent};
use etcd_server::EtcdServer;
use futures::StreamExt;

const CREATES: usize = 10_000;
const CONCURRENCY: usize = 32;
const ETCDCTL_PUTS: usize = 200;

/// About the size of a v1 workload endpoint's JSON.
fn endpoint_value(i: usize) -> Vec<u8> {
    let mut value = format!(
        r#"{{"state":"active","name":"cali{i:011}","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["prof-{i}"],"ipv4_nets":["10.65.{}.{}/32"],"ipv6_nets":[]}}"#,
        i / 256 % 256,
        i % 256
    )
    .into_bytes();
    value.resize(300, b' ');
    value
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let endpoint = server.endpoint();
    let store = Arc::new(
        EtcdStore::connect(EtcdConfig::new(vec![endpoint.clone()]))
            .await
            .expect("connecting"),
    );
    println!(
        "etcd at {endpoint}; values {} bytes",
        endpoint_value(0).len()
    );

    // Sequential creates.
    let start = Instant::now();
    for i in 0..CREATES {
        store
            .create(&format!("/bench/seq/{i:06}"), endpoint_value(i))
            .await
            .expect("create");
    }
    let seq = start.elapsed();
    println!(
        "create x{CREATES} sequential:      {seq:>10.2?}  {:>9.0} ops/s",
        rate(CREATES, seq)
    );

    // 32-way concurrent creates.
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..CREATES)
        .map(|i| {
            let store = Arc::clone(&store);
            async move {
                store
                    .create(&format!("/bench/par/{i:06}"), endpoint_value(i))
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let par = start.elapsed();
    assert!(
        results.iter().all(Result::is_ok),
        "a concurrent create failed"
    );
    println!(
        "create x{CREATES} {CONCURRENCY}-way:          {par:>10.2?}  {:>9.0} ops/s",
        rate(CREATES, par)
    );

    // etcdctl put, one process per key.
    let start = Instant::now();
    for i in 0..ETCDCTL_PUTS {
        let value = String::from_utf8(endpoint_value(i)).expect("utf-8 value");
        let status = etcdctl(&endpoint)
            .args(["put", &format!("/ctl/{i:06}"), &value])
            .stdout(Stdio::null())
            .status()
            .expect("running etcdctl");
        assert!(status.success(), "etcdctl put failed");
    }
    let ctl_put = start.elapsed() * (CREATES / ETCDCTL_PUTS) as u32;
    println!(
        "etcdctl put x{CREATES} (from {ETCDCTL_PUTS}):  {ctl_put:>10.2?}  ratio etcdctl/sequential {:.1}x, etcdctl/{CONCURRENCY}-way {:.1}x",
        ctl_put.as_secs_f64() / seq.as_secs_f64(),
        ctl_put.as_secs_f64() / par.as_secs_f64()
    );

    // List of 20,000.
    let mut best = Duration::MAX;
    let mut listed_at = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let (kvs, revision) = store.list("/bench/").await.expect("list");
        best = best.min(start.elapsed());
        assert_eq!(kvs.len(), 2 * CREATES);
        listed_at = revision;
    }
    let mut ctl_best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let output = etcdctl(&endpoint)
            .args(["get", "--prefix", "/bench/"])
            .output()
            .expect("etcdctl get");
        ctl_best = ctl_best.min(start.elapsed());
        assert!(output.status.success(), "etcdctl get failed");
    }
    println!(
        "list x{} (best of 3):        {best:>10.2?}  etcdctl get --prefix {ctl_best:.2?}  ratio {:.1}x",
        2 * CREATES,
        ctl_best.as_secs_f64() / best.as_secs_f64()
    );

    // Watch replay: every create from the first revision, then InSync.
    let first = listed_at - 2 * CREATES as i64 - ETCDCTL_PUTS as i64 + 1;
    let start = Instant::now();
    let mut stream = store.watch("/bench/", first).await.expect("watch");
    let mut events = 0;
    while let Some(item) = stream.next().await {
        match item.expect("watch event") {
            WatchEvent::InSync { .. } => break,
            _ => events += 1,
        }
    }
    let replay = start.elapsed();
    assert_eq!(events, 2 * CREATES);
    let ctl_replay = etcdctl_watch(&endpoint, first, 2 * CREATES);
    println!(
        "watch replay x{events}:          {replay:>10.2?}  {:>9.0} ev/s  etcdctl watch --rev {ctl_replay:.2?}  ratio {:.1}x",
        rate(events, replay),
        ctl_replay.as_secs_f64() / replay.as_secs_f64()
    );

    // Live watch: a 32-way writer, the watcher counts until it has seen every write.
    let mut stream = store.watch("/live/", listed_at + 1).await.expect("watch");
    let start = Instant::now();
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            futures::stream::iter(0..CREATES)
                .map(|i| {
                    let store = Arc::clone(&store);
                    async move { store.put(&format!("/live/{i:06}"), endpoint_value(i)).await }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await
        })
    };
    let mut seen = 0;
    while seen < CREATES {
        if let Some(WatchEvent::Put(_)) = stream.next().await.map(|item| item.expect("watch event"))
        {
            seen += 1;
        }
    }
    let live = start.elapsed();
    writer.await.expect("writer task");
    println!(
        "watch live x{CREATES} ({CONCURRENCY}-way writer): {live:>10.2?}  {:>9.0} ev/s",
        rate(CREATES, live)
    );
    drop(server);
}

fn etcdctl(endpoint: &str) -> Command {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint]);
    command
}

/// How long `etcdctl watch --prefix --rev` takes to print `events` events (3 lines each).
fn etcdctl_watch(endpoint: &str, from: i64, events: usize) -> Duration {
    let start = Instant::now();
    let mut child = etcdctl(endpoint)
        .args(["watch", "--prefix", "/bench/", "--rev", &from.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("etcdctl watch");
    let stdout = child.stdout.take().expect("etcdctl stdout");
    let mut puts = 0;
    for line in BufReader::new(stdout).lines() {
        if line.expect("etcdctl output") == "PUT" {
            puts += 1;
            if puts == events {
                break;
            }
        }
    }
    let took = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    took
}
