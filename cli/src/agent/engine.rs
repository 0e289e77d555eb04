//! The agent's view of the cluster: raw updates in, this host's `DesiredState` out.
//!
//! A thin seam over `calico_core`, so the loop does not care whether the desired state is
//! rebuilt in full or incrementally.

use calico_core::cluster::ClusterState;
use calico_core::compute::compute;
use calico_core::desired::DesiredState;

/// One host's cluster state and the desired state computed from it.
#[derive(Debug)]
pub(crate) struct Engine {
    host: String,
    state: ClusterState,
    desired: DesiredState,
}

impl Engine {
    /// An empty state for `host`.
    pub(crate) fn new(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            state: ClusterState::default(),
            desired: compute(&ClusterState::default(), host),
        }
    }

    /// Feeds a batch of raw updates (`None` = deleted); returns whether this host's desired
    /// state changed.
    pub(crate) fn apply_batch(
        &mut self,
        updates: impl IntoIterator<Item = (String, Option<Vec<u8>>)>,
    ) -> bool {
        for (key, value) in updates {
            self.state.apply(&key, value.as_deref());
        }
        let desired = compute(&self.state, &self.host);
        let changed = desired != self.desired;
        self.desired = desired;
        changed
    }

    pub(crate) fn desired(&self) -> &DesiredState {
        &self.desired
    }

    pub(crate) fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Number of this host's endpoints (the `calico_node_endpoints` gauge).
    pub(crate) fn local_endpoints(&self) -> usize {
        self.state
            .endpoints
            .keys()
            .filter(|id| id.host == self.host)
            .count()
    }
}

/// What would change to turn `observed` into `desired`, one line per object, in a stable
/// order (used by `--dry-run` and to decide whether a resync must re-apply).
pub(crate) fn drift(desired: &DesiredState, observed: &DesiredState) -> Vec<String> {
    use std::collections::BTreeSet;
    use std::fmt::Debug;

    fn diff_maps<K: Ord + Debug, V: PartialEq>(
        out: &mut Vec<String>,
        what: &str,
        want: &std::collections::BTreeMap<K, V>,
        have: &std::collections::BTreeMap<K, V>,
    ) {
        let keys: BTreeSet<&K> = want.keys().chain(have.keys()).collect();
        for k in keys {
            match (want.get(k), have.get(k)) {
                (Some(w), Some(h)) if w != h => out.push(format!("rewrite {what} {k:?}")),
                (Some(_), None) => out.push(format!("create {what} {k:?}")),
                (None, Some(_)) => out.push(format!("delete {what} {k:?}")),
                _ => {}
            }
        }
    }
    fn diff_sets<T: Ord + Debug>(
        out: &mut Vec<String>,
        what: &str,
        want: &BTreeSet<T>,
        have: &BTreeSet<T>,
    ) {
        out.extend(want.difference(have).map(|x| format!("add {what} {x:?}")));
        out.extend(
            have.difference(want)
                .map(|x| format!("delete {what} {x:?}")),
        );
    }

    let mut out = Vec::new();
    let tables: BTreeSet<_> = desired
        .tables
        .keys()
        .chain(observed.tables.keys())
        .collect();
    let empty = calico_core::desired::TableState::default();
    for id in tables {
        let want = desired.tables.get(id).unwrap_or(&empty);
        let have = observed.tables.get(id).unwrap_or(&empty);
        diff_maps(
            &mut out,
            &format!("{id:?} chain"),
            &want.chains,
            &have.chains,
        );
        diff_maps(&mut out, &format!("{id:?} hook"), &want.hooks, &have.hooks);
    }
    diff_maps(&mut out, "ipset", &desired.ipsets, &observed.ipsets);
    diff_sets(&mut out, "route", &desired.routes, &observed.routes);
    diff_sets(
        &mut out,
        "neighbour",
        &desired.neighbours,
        &observed.neighbours,
    );
    diff_maps(&mut out, "sysctl", &desired.sysctls, &observed.sysctls);
    if desired.bird_v4 != observed.bird_v4 {
        out.push("rewrite bird.cfg".into());
    }
    if desired.bird_v6 != observed.bird_v6 {
        out.push("rewrite bird6.cfg".into());
    }
    out
}
