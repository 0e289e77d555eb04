//! World benchmarks (a plain `fn main`, run with `cargo bench -p calico-sim --bench world`):
//!
//! - packet walks per second on a 100-host world (request + reply, cross-host);
//! - time and peak memory (VmHWM) to settle worlds of N hosts with 10 workloads each;
//! - then, on each settled world, one more workload added (its endpoint reaches every agent)
//!   and settled, twice: the first change copies what the agents loaded from one shared
//!   snapshot (copy-on-write), the second shows the steady cost of one endpoint change.
//!
//! Arguments: host counts to settle (default: the walks, then `100 300`), or `walks` for the
//! walks alone. Peak memory is per process, so run one size per invocation for a clean
//! number: `cargo bench -p calico-sim --bench world -- 1000`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use calico_backends::{AssignRequest, Datastore};
use calico_core::model::{IpPool, BLOCK_SIZE};
use calico_sim::{ops, Probe, Verdict, World};

const WORKLOADS_PER_HOST: usize = 10;
const PROFILE: &str = "PROF_ALL";

/// Hosts share 172.16.0.0/16 so that up to 65k of them are on-link with each other.
fn host_ip(i: usize) -> Ipv4Addr {
    let [_, _, b, c] = u32::try_from(i + 2).unwrap_or(0).to_be_bytes();
    Ipv4Addr::new(172, 16, b, c)
}

/// The pool the settle worlds allocate from: room for 262,144 blocks of 64 addresses.
const POOL: &str = "10.0.0.0/8";

/// Workload `w` of host `h`: inside the host's own IPAM block (the first explicit address in
/// a block claims it, reference 1.8), as auto-assignment would place them, so each host
/// announces one block route.
fn workload_ip(h: usize, w: usize) -> Ipv4Addr {
    let offset = u32::try_from(h * BLOCK_SIZE + w + 1).unwrap_or(0);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + offset)
}

/// CPU seconds (user + system, every thread) this process has used: on a machine shared
/// with other builds the wall times vary with the load, this much less.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th,
    // in USER_HZ (100 per second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) as f64 / 100.0,
        _ => f64::NAN,
    }
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Builds `hosts` hosts with `per_host` workloads each, all in one profile, writes everything
/// to the store, then starts every agent (each loads one snapshot). Returns (world, names).
async fn build(hosts: usize, per_host: usize, unshared: bool) -> (World, Vec<String>) {
    let world = if unshared {
        World::new(std::sync::Arc::new(calico_backends::MemStore::new()))
    } else {
        World::with_mem_store()
    };
    let mut world = world.with_wire_prefix_len(16);
    let store = world.store().clone();
    let mut names = Vec::new();
    ops::profile_add(store.as_ref(), PROFILE).await.unwrap();
    let pool = IpPool::new(POOL.parse().unwrap());
    let datastore = Datastore::new(store.clone());
    datastore.put_pool(&pool).await.unwrap();
    let profiles = vec![PROFILE.to_string()];
    for h in 0..hosts {
        let (host, ip) = (format!("host{h}"), host_ip(h));
        world.add_host(&host, ip).unwrap();
        ops::node_start(store.as_ref(), &host, ip).await.unwrap();
        for w in 0..per_host {
            let name = format!("w{h}_{w}");
            world.add_workload(&host, &name).unwrap();
            let plumbing = world.host(&host).unwrap().plumbing();
            let addr = workload_ip(h, w);
            let id = ops::container_add(store.as_ref(), plumbing, &host, ip, &name, addr)
                .await
                .unwrap();
            // As `calicoctl container add <ip>` does: the first address claims the block.
            let request = AssignRequest::Ip(IpAddr::V4(addr));
            datastore
                .assign_ip(request, &id.endpoint, &host)
                .await
                .unwrap();
            ops::set_profiles(store.as_ref(), &id, &profiles)
                .await
                .unwrap();
            names.push(name);
        }
    }
    for h in 0..hosts {
        world.start_agent(&format!("host{h}")).unwrap();
    }
    (world, names)
}

async fn bench_walks() {
    let (mut world, names) = build(100, 2, false).await;
    world.settle().await.unwrap();
    let n = 20_000;
    let start = Instant::now();
    let mut allowed = 0;
    for i in 0..n {
        let src = &names[i % names.len()];
        let dst = &names[(i * 7919 + 13) % names.len()];
        if src == dst {
            continue;
        }
        let probe = if i % 2 == 0 {
            Probe::ping()
        } else {
            Probe::tcp(80)
        };
        if world.send(src, dst, probe).unwrap().verdict == Verdict::Allow {
            allowed += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "walks: 100 hosts, 200 workloads: {n} walks in {secs:.2} s = {:.0} walks/s ({allowed} allowed)",
        n as f64 / secs
    );
}

async fn bench_settle(hosts: usize, unshared: bool) {
    let start = Instant::now();
    let (mut world, _) = build(hosts, WORKLOADS_PER_HOST, unshared).await;
    let built = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let report = world.settle().await.unwrap();
    let settled = start.elapsed().as_secs_f64();
    let routes: usize = world
        .hosts()
        .map(|h| h.dataplane().bgp_routes().len())
        .sum();
    let hwm = vm_hwm_kib().map_or("?".to_string(), |k| format!("{} MiB", k / 1024));
    println!(
        "settle: {hosts} hosts x {WORKLOADS_PER_HOST} workloads: build {built:.2} s, settle {settled:.2} s \
         ({} rounds, {} events, {} dataplane changes, {} bgp changes, {routes} bgp routes), peak RSS {hwm}",
        report.rounds, report.events, report.dataplane_changes, report.bgp_changes
    );
    for (nth, label) in [(0, "first"), (1, "second")] {
        let name = format!("extra{nth}");
        let (wall, cpu) = (Instant::now(), cpu_secs());
        add_workload(&mut world, 0, &name, WORKLOADS_PER_HOST + nth).await;
        let report = world.settle().await.unwrap();
        println!(
            "incremental: {hosts} hosts: {label} workload added and settled in {:.3} s ({:.2} s CPU, {} dataplane changes)",
            wall.elapsed().as_secs_f64(),
            cpu_secs() - cpu,
            report.dataplane_changes
        );
    }
}

/// Adds workload `name` to `host<h>` as `build` does, with address `nth` of the host's block.
async fn add_workload(world: &mut World, h: usize, name: &str, nth: usize) {
    let store = world.store().clone();
    let (host, ip) = (format!("host{h}"), host_ip(h));
    let host = host.as_str();
    world.add_workload(host, name).unwrap();
    let plumbing = world.host(host).unwrap().plumbing();
    let addr = workload_ip(h, nth);
    let id = ops::container_add(store.as_ref(), plumbing, host, ip, name, addr)
        .await
        .unwrap();
    let datastore = Datastore::new(store.clone());
    datastore
        .assign_ip(AssignRequest::Ip(IpAddr::V4(addr)), &id.endpoint, host)
        .await
        .unwrap();
    ops::set_profiles(store.as_ref(), &id, &[PROFILE.to_string()])
        .await
        .unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let walks_only = args.iter().any(|a| a == "walks");
    let unshared = args.iter().any(|a| a == "unshared");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        if walks_only {
            bench_walks().await;
        } else if sizes.is_empty() {
            bench_walks().await;
            for hosts in [100, 300] {
                bench_settle(hosts, unshared).await;
            }
        } else {
            for hosts in sizes {
                bench_settle(hosts, unshared).await;
            }
        }
    });
}
