//! `LinuxDataplane`: desired state onto the network namespace this process runs in.
//!
//! - [`cmd`]: running a tool with stdin, capturing errors; the [`CommandLog`] tests read.
//! - [`iptables`]: `iptables-save` parsing and one `iptables-restore --noflush` per table.
//! - [`ipset`]: `ipset save` parsing, `ipset restore` (incremental or swap).
//! - [`route`]: routes (protocol [`RTPROT_CALICO`]) and static neighbours via rtnetlink.
//! - [`proxy_ndp`]: proxy-NDP entries (`ip -6 neigh ... proxy`) via rtnetlink.
//! - [`sysctl`]: `/proc/sys` reads and writes.
//! - [`bird`]: the BIRD daemons, their configs and `show protocols`.
//! - [`plumbing`]: [`LinuxPlumbing`], `calicoctl container add/remove` on iproute2.
//!
//! Apply order as on the simulator: ipsets we want, then each table, then stale ipsets (once
//! no rule uses them), routes and neighbours, sysctls, BIRD. Only differences are written, so
//! applying the same state twice starts no process and sends no netlink write.
//!
//! iptables and ipsets are diffed, as Felix does, against what we last wrote (chain name →
//! rule lines and hashes, hooks, set name → members) rather than a fresh `iptables-save` /
//! `ipset save`, which at 10,000 rules costs more than the restore itself. The kernel is read
//! on the first apply, in every `observe` (the agent's resync: observe, compare, re-apply,
//! which therefore repairs drift made behind our back), and after a restore or `ipset`
//! command failed. Routes, neighbours and sysctls are cheap to read and are read every apply.
//!
//! The tools are run synchronously: an apply is a handful of short processes, and the agent
//! calls it from one task. Routes and neighbours go over one rtnetlink connection per apply,
//! whose task runs on the caller's tokio runtime: `apply` and `observe` must be polled inside
//! one (outside, they fail with [`DataplaneError::Kernel`]).

pub mod bird;
pub mod cmd;
pub mod ipset;
pub mod iptables;
pub mod overlay;
pub mod plumbing;
pub mod proxy_ndp;
pub mod route;
pub mod sysctl;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use async_trait::async_trait;
use calico_core::desired::{DesiredState, Neighbour, ProxyNeighbour, Route, TableId};
use calico_core::iptables::IpFamily;

pub use bird::{BgpProtocol, BirdManager};
pub use cmd::{CommandLog, Invocation, Runner};
pub use overlay::{RTPROT_CALICO_OVERLAY, STATUS_FILE as OVERLAY_STATUS_FILE};
pub use plumbing::LinuxPlumbing;
pub use route::RTPROT_CALICO;
pub use sysctl::{SysctlWrite, Sysctls};

use crate::{ApplyReport, Change, Dataplane, DataplaneError};

/// The Linux dataplane of one host (the namespace of the calling process).
#[derive(Debug)]
pub struct LinuxDataplane {
    runner: Runner,
    bird: BirdManager,
    sysctls: Sysctls,
    /// Neighbours this process installed (see [`route`] for what counts as ours).
    owned_neighbours: BTreeSet<Neighbour>,
    /// Proxy-NDP entries this process installed (ours as neighbours are).
    owned_proxies: BTreeSet<ProxyNeighbour>,
    /// Sysctls we set; `observe` reports these.
    owned_sysctls: BTreeSet<String>,
    /// Tunnel devices and what goes through them.
    tunnels: overlay::Tunnels,
    /// Netlink write requests sent so far (see [`LinuxDataplane::netlink_writes`]).
    netlink_writes: u64,
    /// Our iptables and ipsets as of the last kernel read plus what we wrote since; `None`
    /// (the next apply reads the kernel) before the first apply, when `observe` could not
    /// read, and after a restore or `ipset` command failed.
    known: Option<Installed>,
}

/// What the kernel holds of ours in iptables and ipsets, read in one go or kept up to date by
/// our own writes.
#[derive(Debug)]
struct Installed {
    tables: BTreeMap<TableId, iptables::InstalledTable>,
    ipsets: BTreeMap<String, calico_core::desired::IpSet>,
}

type ObservedRoutes = (
    BTreeSet<Route>,
    BTreeSet<Neighbour>,
    BTreeSet<ProxyNeighbour>,
);

const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

impl LinuxDataplane {
    /// A dataplane keeping BIRD's config, socket and pid files in `run_dir`.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self::with_bird(BirdManager::new(run_dir))
    }

    /// A dataplane whose BIRD daemons `bird` manages (log dir, policy-only mode).
    pub fn with_bird(bird: BirdManager) -> Self {
        let runner = Runner::default();
        LinuxDataplane {
            tunnels: overlay::Tunnels::new(runner.clone(), bird.run_dir().to_path_buf()),
            runner,
            bird,
            sysctls: Sysctls::default(),
            owned_neighbours: BTreeSet::new(),
            owned_proxies: BTreeSet::new(),
            owned_sysctls: BTreeSet::new(),
            netlink_writes: 0,
            known: None,
        }
    }

    /// The log of every tool started; call `enable()` on it to start recording.
    pub fn command_log(&self) -> &CommandLog {
        self.runner.log()
    }

    /// Netlink write requests (route and neighbour add, replace, delete) this dataplane has
    /// sent; unchanged by an apply that found nothing to change.
    pub fn netlink_writes(&self) -> u64 {
        self.netlink_writes
    }

    /// Why IPIP does not work on this kernel, once an apply found out.
    pub fn ipip_unavailable(&self) -> Option<&str> {
        self.tunnels.ipip_unavailable()
    }

    /// BGP sessions as `birdc show protocols` reports them, for `calicoctl status`.
    ///
    /// # Errors
    /// When `birdc` fails on a running daemon.
    pub fn bgp_status(&self) -> Result<Vec<BgpProtocol>, DataplaneError> {
        self.bird.status(&self.runner)
    }

    /// Stops the BIRD daemons (shutdown, tests); every error is returned.
    pub fn stop_bird(&mut self) -> Vec<DataplaneError> {
        self.bird.stop(&self.runner)
    }

    /// What the kernel holds of ours: `iptables-save`, `ip6tables-save` and `ipset save`, run
    /// at the same time (about 10 ms of process start-up and table dump each, which an agent's
    /// first apply otherwise pays one after another on top of its restore).
    fn read(&self) -> Result<Installed, DataplaneError> {
        let runner = &self.runner;
        let (v4, v6, ipsets) = std::thread::scope(|s| {
            let v6 = s.spawn(|| read_family(runner, IpFamily::V6));
            let ipsets = s.spawn(|| read_ipsets(runner));
            let v4 = read_family(runner, IpFamily::V4);
            (v4, join_read(v6.join()), join_read(ipsets.join()))
        });
        let mut tables = BTreeMap::new();
        for (family, text) in [(IpFamily::V4, v4?), (IpFamily::V6, v6?)] {
            for (table, installed) in iptables::parse_save(&text) {
                tables.insert(TableId { family, table }, installed);
            }
        }
        Ok(Installed {
            tables,
            ipsets: ipsets?,
        })
    }

    fn ipset_restore(&self, operation: &str, input: &str) -> Result<(), DataplaneError> {
        if input.is_empty() {
            return Ok(());
        }
        self.runner
            .run(operation, "ipset", &["restore", "-exist"], Some(input))?;
        Ok(())
    }

    /// Step 2: one restore per table with changes, recording each committed one in
    /// `installed`. Returns whether every table applied.
    fn apply_tables(
        &self,
        desired: &DesiredState,
        rendered: &mut BTreeMap<TableId, BTreeMap<String, Vec<String>>>,
        installed: &mut BTreeMap<TableId, iptables::InstalledTable>,
        changes: &mut Vec<Change>,
        first_error: &mut Option<DataplaneError>,
    ) -> bool {
        let mut ok = true;
        let empty = iptables::InstalledTable::default();
        for family in FAMILIES {
            for table in iptables::TABLES {
                let id = TableId { family, table };
                let have = installed.get(&id).unwrap_or(&empty);
                let plan = iptables::plan_rendered_table(
                    id,
                    desired.tables.get(&id),
                    rendered.remove(&id).unwrap_or_default(),
                    have,
                );
                if !plan.input.is_empty() {
                    let tool = iptables::restore_tool(family);
                    let operation = format!("restoring {}", crate::sim::netfilter::table_label(id));
                    let run =
                        self.runner
                            .run(&operation, tool, &["--noflush", "-w"], Some(&plan.input));
                    if let Err(e) = run {
                        ok = false;
                        first_error.get_or_insert(e);
                        continue;
                    }
                }
                changes.extend(plan.changes);
                installed.insert(id, plan.after);
            }
        }
        ok
    }

    /// Step 4: routes and neighbours over one netlink connection.
    async fn apply_routes(
        &mut self,
        desired: &DesiredState,
        changes: &mut Vec<Change>,
        waiting: &mut BTreeSet<String>,
    ) -> Result<(), DataplaneError> {
        let mut netlink = route::Netlink::open()?;
        let result = self
            .apply_routes_on(&mut netlink, desired, changes, waiting)
            .await;
        self.netlink_writes += netlink.writes();
        netlink.close().await;
        result
    }

    async fn apply_routes_on(
        &mut self,
        netlink: &mut route::Netlink,
        desired: &DesiredState,
        changes: &mut Vec<Change>,
        waiting: &mut BTreeSet<String>,
    ) -> Result<(), DataplaneError> {
        let links = netlink.links().await?;
        let have_routes = netlink.routes(&links).await?;
        let all_neigh = netlink.permanent_neighbours(&links).await?;
        let mut owned = self.owned_neighbours.clone();
        owned.extend(desired.neighbours.iter().cloned());
        let have_neigh = route::our_neighbours(&all_neigh, &have_routes, &owned);
        let mut plan = route::plan_routes(
            &desired.routes,
            &desired.neighbours,
            &have_routes,
            &have_neigh,
            &links,
        );
        let all_proxies = netlink.proxy_neighbours(&links).await?;
        let mut owned = self.owned_proxies.clone();
        owned.extend(desired.proxy_neighbours.iter().cloned());
        let have_proxies = proxy_ndp::ours(&all_proxies, &have_routes, &owned);
        proxy_ndp::plan(&desired.proxy_neighbours, &have_proxies, &links, &mut plan);
        for skipped in &plan.skipped {
            tracing::debug!("skipping {skipped} (retried next apply)");
        }
        waiting.extend(plan.waiting.iter().cloned());
        self.owned_neighbours = desired
            .neighbours
            .iter()
            .filter(|n| links.contains(&n.dev))
            .cloned()
            .collect();
        self.owned_proxies = desired
            .proxy_neighbours
            .iter()
            .filter(|p| links.contains(&p.dev))
            .cloned()
            .collect();
        let done = netlink.execute(&plan, &links).await;
        changes.extend(done.changes);
        let mut errors = done.errors.into_iter();
        let first = errors.next();
        for e in errors {
            tracing::warn!("{e}");
        }
        first.map_or(Ok(()), Err)
    }

    /// Our routes, neighbours and proxy-NDP entries as the kernel holds them, over one
    /// netlink connection.
    async fn observe_routes(&self) -> Result<ObservedRoutes, DataplaneError> {
        let netlink = route::Netlink::open()?;
        let read = async {
            let links = netlink.links().await?;
            let routes = netlink.routes(&links).await?;
            let all_neigh = netlink.permanent_neighbours(&links).await?;
            let neighbours = route::our_neighbours(&all_neigh, &routes, &self.owned_neighbours);
            let all_proxies = netlink.proxy_neighbours(&links).await?;
            let proxies = proxy_ndp::ours(&all_proxies, &routes, &self.owned_proxies);
            Ok((routes, neighbours, proxies))
        }
        .await;
        netlink.close().await;
        read
    }

    fn apply_sysctls(
        &mut self,
        desired: &DesiredState,
        changes: &mut Vec<Change>,
        waiting: &mut BTreeSet<String>,
        first_error: &mut Option<DataplaneError>,
    ) {
        self.owned_sysctls
            .retain(|k| desired.sysctls.contains_key(k));
        for (key, value) in &desired.sysctls {
            match self.sysctls.set(key, value) {
                Ok(SysctlWrite::Unchanged) => {
                    self.owned_sysctls.insert(key.clone());
                }
                Ok(SysctlWrite::Written) => {
                    self.owned_sysctls.insert(key.clone());
                    changes.push(Change::SetSysctl {
                        key: key.clone(),
                        value: value.clone(),
                    });
                }
                Ok(SysctlWrite::Missing) => {
                    tracing::debug!("skipping sysctl {key}: not present (retried next apply)");
                    if let Some(iface) = sysctl_iface(key) {
                        waiting.insert(iface.to_string());
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
}

#[async_trait]
impl Dataplane for LinuxDataplane {
    async fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        let mut changes = Vec::new();
        let mut first_error = None;
        // Taken, not borrowed: an early return or a failed command below leaves `None`, so the
        // next apply reads the kernel instead of trusting a record of writes that may not have
        // happened.
        let (known, mut rendered) = match self.known.take() {
            Some(known) => (Ok(known), render_tables(desired)),
            // Rendering does not depend on the kernel: it runs while the reads do.
            None => std::thread::scope(|s| {
                let rendered = s.spawn(|| render_tables(desired));
                let known = self.read();
                (known, join_read(rendered.join()))
            }),
        };
        let mut known = known?;

        // 1. Sets the rules will match on.
        let sets = ipset::plan_update(&desired.ipsets, &known.ipsets);
        self.ipset_restore("updating ipsets", &sets.input)?;
        ipset::record_update(&mut known.ipsets, &desired.ipsets);
        changes.extend(sets.changes);

        // 2. Tables; 3. stale sets, only once every table stopped using them.
        let mut written = self.apply_tables(
            desired,
            &mut rendered,
            &mut known.tables,
            &mut changes,
            &mut first_error,
        );
        if written {
            let stale = ipset::plan_destroy(&desired.ipsets, &known.ipsets);
            match self.ipset_restore("destroying stale ipsets", &stale.input) {
                Ok(()) => {
                    ipset::record_destroy(&mut known.ipsets, &desired.ipsets);
                    changes.extend(stale.changes);
                }
                Err(e) => {
                    written = false;
                    first_error.get_or_insert(e);
                }
            }
        }
        if written {
            self.known = Some(known);
        }

        // 4. Routes and neighbours.
        let mut waiting = BTreeSet::new();
        if let Err(e) = self.apply_routes(desired, &mut changes, &mut waiting).await {
            first_error.get_or_insert(e);
        }

        // Tunnel devices and what goes through them.
        if let Err(e) = self
            .tunnels
            .apply(&desired.overlay, &mut changes, &mut waiting)
        {
            first_error.get_or_insert(e);
        }

        // 5. Sysctls.
        self.apply_sysctls(desired, &mut changes, &mut waiting, &mut first_error);

        // 6. BIRD.
        match self.bird.apply(
            &self.runner,
            desired.bird_v4.as_ref(),
            desired.bird_v6.as_ref(),
        ) {
            Ok(c) => changes.extend(c),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }

        match first_error {
            Some(e) => Err(e),
            None => Ok(ApplyReport { changes, waiting }),
        }
    }

    async fn observe(&mut self) -> Result<DesiredState, DataplaneError> {
        // The read also replaces what the next apply diffs against, so the apply of a resync
        // that found drift repairs it; a failed read leaves that apply to read again.
        self.known = None;
        let installed = self.read()?;
        let mut tables = BTreeMap::new();
        for (id, have) in &installed.tables {
            if let Some(state) = iptables::observe_table(id.table, have)? {
                tables.insert(*id, state);
            }
        }
        let ipsets = installed.ipsets.clone();
        self.known = Some(installed);
        let (routes, neighbours, proxy_neighbours) = self.observe_routes().await?;
        let sysctls = self
            .owned_sysctls
            .iter()
            .filter_map(|k| self.sysctls.get(k).map(|v| (k.clone(), v)))
            .collect();
        let (bird_v4, bird_v6) = self.bird.observe();
        Ok(DesiredState {
            tables,
            ipsets,
            routes,
            neighbours,
            proxy_neighbours,
            sysctls,
            bird_v4,
            bird_v6,
            overlay: self.tunnels.observe()?,
        })
    }
}

/// Every desired table's chains rendered (see [`iptables::render_chains`]).
fn render_tables(desired: &DesiredState) -> BTreeMap<TableId, BTreeMap<String, Vec<String>>> {
    desired
        .tables
        .iter()
        .map(|(id, table)| (*id, iptables::render_chains(Some(table))))
        .collect()
}

/// One family's `iptables-save` text.
fn read_family(runner: &Runner, family: IpFamily) -> Result<String, DataplaneError> {
    let tool = iptables::save_tool(family);
    runner.run(&format!("reading {tool}"), tool, &[], None)
}

fn read_ipsets(
    runner: &Runner,
) -> Result<BTreeMap<String, calico_core::desired::IpSet>, DataplaneError> {
    let text = runner.run("reading ipsets", "ipset", &["save"], None)?;
    ipset::parse_save(&text)
}

/// A read thread's result; a panic in it is passed on, as it would have been unthreaded.
fn join_read<T>(joined: std::thread::Result<T>) -> T {
    joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The interface of a per-interface sysctl key (`net.ipv4.conf.<iface>.rp_filter`), as the
/// simulator reads it.
fn sysctl_iface(key: &str) -> Option<&str> {
    crate::sim::kernel::split_iface_sysctl(key).map(|(_, iface, _)| iface)
}
