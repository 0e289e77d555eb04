//! The oracle's own reading of selector semantics (reference 3, "Semantics" and "Labels an
//! expression sees"), written from the reference table rather than shared with the compiler,
//! so a slip in either shows up as a disagreement between the packet walk and the oracle.
//!
//! Only the parse tree is shared: what an expression says, not what it means.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_core::cluster::ClusterState;
use calico_core::model::EndpointState;
use calico_core::selector::Expr;

/// The labels an endpoint shows to selectors, flattened: a key present anywhere takes its
/// value from the first place it appears, in the order own labels, then per profile (in
/// `profile_ids` order) its labels and then its tags (value "").
pub fn labels_of(
    state: &ClusterState,
    own: &BTreeMap<String, String>,
    profile_ids: &[String],
) -> BTreeMap<String, String> {
    let mut seen = own.clone();
    for id in profile_ids {
        let Some(profile) = state.profiles.get(id) else {
            continue;
        };
        for (k, v) in profile.labels.iter().flatten() {
            seen.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for tag in profile.tags.iter().flatten() {
            seen.entry(tag.clone()).or_default();
        }
    }
    seen
}

/// Whether `labels` satisfy `expr`. Absence satisfies `!=` and `not in`.
pub fn holds(expr: &Expr, labels: &BTreeMap<String, String>) -> bool {
    let value = |k: &String| labels.get(k);
    match expr {
        Expr::All => true,
        Expr::Has(k) => labels.contains_key(k),
        Expr::Eq(k, v) => value(k) == Some(v),
        Expr::Ne(k, v) => value(k) != Some(v),
        Expr::In(k, set) => matches!(value(k), Some(v) if set.contains(v)),
        Expr::NotIn(k, set) => !matches!(value(k), Some(v) if set.contains(v)),
        Expr::Not(inner) => !holds(inner, labels),
        Expr::And(all) => all.iter().all(|e| holds(e, labels)),
        Expr::Or(any) => any.iter().any(|e| holds(e, labels)),
    }
}

/// Every address a rule selector matches: the addresses of active workload endpoints and the
/// expected IPs of host endpoints whose labels satisfy it.
pub fn members(state: &ClusterState, expr: &Expr) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    for ep in state.endpoints.values() {
        if ep.state == EndpointState::Active
            && holds(expr, &labels_of(state, &ep.labels, &ep.profile_ids))
        {
            out.extend(ep.nets().map(|n| n.addr()));
        }
    }
    for hep in state.host_endpoints.values() {
        if holds(expr, &labels_of(state, &hep.labels, &hep.profile_ids)) {
            out.extend(hep.expected_ips());
        }
    }
    out
}
