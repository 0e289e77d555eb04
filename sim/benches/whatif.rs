//! What-if benchmark (a plain `fn main`, `cargo bench -p calico-sim --bench whatif [-- <hosts>]`):
//! one rule added to a profile of 10 members, on a snapshot of `<hosts>` hosts (default
//! 1,000) × 10 workloads (10,000 endpoints in `<hosts>` profiles of 10, each workload in its
//! host's own IPAM block). Prints the total time of `whatif::evaluate` and its phases (build
//! and settle the copy, with the settle and the copy of the settled kernels on their own; run
//! the change and settle; walk the affected flows after and before, on every core), the CPU
//! time used (steadier than wall time on a shared machine),
//! and, as the baseline, the same with every flow of the matrix walked, extrapolated from the
//! measured walk rate (walking 10^8 flows is not something to run).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use calico_backends::{AssignRequest, Datastore};
use calico_cli::ctl::whatif::{WhatIfOutput, WhatIfRequest};
use calico_core::model::{IpPool, BLOCK_SIZE};
use calico_sim::whatif::{self, Scope};
use calico_sim::{ops, World};

const WORKLOADS_PER_HOST: usize = 10;

fn host_ip(i: usize) -> Ipv4Addr {
    let [_, _, b, c] = u32::try_from(i + 2).unwrap_or(0).to_be_bytes();
    Ipv4Addr::new(172, 16, b, c)
}

fn workload_ip(h: usize, w: usize) -> Ipv4Addr {
    let offset = u32::try_from(h * BLOCK_SIZE + w + 1).unwrap_or(0);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + offset)
}

/// CPU seconds (user + system, every thread) this process has used: on a machine shared
/// with other builds the wall times vary with the load, this much less.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th,
    // in USER_HZ (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The datastore of `hosts` × 10 workloads as `calicoctl` would have written it; workload
/// `i` of host `h` is in profile `PROF_<(h + hosts/10 × i) mod hosts>`, so each of the
/// `hosts` profiles has 10 members on up to 10 hosts. Written through a scratch world (for the plumbing) that never runs.
async fn snapshot(hosts: usize) -> Vec<(String, String)> {
    let mut world = World::with_mem_store().with_wire_prefix_len(16);
    let store = world.store().clone();
    let datastore = Datastore::new(store.clone());
    datastore
        .put_pool(&IpPool::new("10.0.0.0/8".parse().unwrap()))
        .await
        .unwrap();
    for p in 0..hosts {
        ops::profile_add(store.as_ref(), &format!("PROF_{p}"))
            .await
            .unwrap();
    }
    for h in 0..hosts {
        let (host, ip) = (format!("host{h}"), host_ip(h));
        world.add_host(&host, ip).unwrap();
        ops::node_start(store.as_ref(), &host, ip).await.unwrap();
        for w in 0..WORKLOADS_PER_HOST {
            let name = format!("w{h}_{w}");
            world.add_workload(&host, &name).unwrap();
            let plumbing = world.host(&host).unwrap().plumbing();
            let addr = workload_ip(h, w);
            let id = ops::container_add(store.as_ref(), plumbing, &host, ip, &name, addr)
                .await
                .unwrap();
            datastore
                .assign_ip(AssignRequest::Ip(IpAddr::V4(addr)), &id.endpoint, &host)
                .await
                .unwrap();
            let profile = format!("PROF_{}", (h + hosts / 10 * w) % hosts);
            ops::set_profiles(store.as_ref(), &id, &[profile])
                .await
                .unwrap();
        }
    }
    let (kvs, _) = store.list("/calico/").await.unwrap();
    kvs.into_iter()
        .map(|kv| (kv.key, String::from_utf8(kv.value).unwrap()))
        .collect()
}

fn main() {
    let hosts: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let snapshot = snapshot(hosts).await;
        let request = WhatIfRequest {
            hostname: "host0".into(),
            snapshot,
            command: [
                "profile", "PROF_0", "rule", "add", "inbound", "--at=1", "deny", "icmp",
            ]
            .map(String::from)
            .to_vec(),
            stdin: String::new(),
            probes: Vec::new(),
            output: WhatIfOutput::Text,
            svg: None,
            fail_on: None,
        };
        let start = Instant::now();
        let cpu_start = cpu_secs();
        let report = whatif::evaluate(&request, Scope::Affected).await.unwrap();
        let total = start.elapsed().as_secs_f64();
        let cpu = match (cpu_start, cpu_secs()) {
            (Some(a), Some(b)) => format!("{:.1} s", b - a),
            _ => "?".to_string(),
        };
        let t = report.timings;
        let walk_secs = t.walks.as_secs_f64();
        let per_flow = walk_secs / report.evaluated.max(1) as f64;
        let n = report.endpoints;
        let full_flows = n * n.saturating_sub(1);
        let full = t.build.as_secs_f64() + t.change.as_secs_f64() + per_flow * full_flows as f64;
        let hwm = vm_hwm_kib().map_or("?".to_string(), |k| format!("{} MiB", k / 1024));
        println!(
            "what-if: {hosts} hosts x {WORKLOADS_PER_HOST} workloads, one rule added to a \
             profile of 10: {total:.2} s (build and settle {:.2} s, of which settling {:.2} s and \
             putting the kernels aside {:.2} s, change and settle {:.2} s, \
             {} flows walked after and before in {walk_secs:.2} s); {} of {n} endpoints \
             affected, {} flows changed; full matrix extrapolated: {full_flows} flows, \
             {full:.1} s; CPU used {cpu}; peak RSS {hwm}",
            t.build.as_secs_f64(),
            t.settle.as_secs_f64(),
            t.put_aside.as_secs_f64(),
            t.change.as_secs_f64(),
            report.evaluated,
            report.affected,
            report.changes.len(),
        );
    });
}
