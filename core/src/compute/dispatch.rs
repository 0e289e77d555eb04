//! The dispatch chains (reference 3.5, flattened): `cali-from-wl-dispatch` sends a packet
//! arriving from a workload interface to that endpoint's `cali-fw-` chain, `cali-to-wl-dispatch`
//! one leaving to a workload interface to its `cali-tw-` chain. Both end in DROP, so a
//! `cali*` interface with no endpoint (yet, or any more) is dropped.
//!
//! `-g` (goto) is used so that the endpoint chain's RETURN returns straight to the caller of the
//! dispatch chain.

use super::names::{from_wl_chain, to_wl_chain, FROM_WL_DISPATCH, TO_WL_DISPATCH};
use crate::iptables::{Chain, Match, Rule, Target};

/// Both dispatch chains for the given local interfaces (each listed once, in sorted order).
pub fn dispatch_chains<'a>(ifaces: impl IntoIterator<Item = &'a str>) -> Vec<Chain> {
    let mut from = Vec::new();
    let mut to = Vec::new();
    for iface in ifaces {
        from.push(Rule::new(
            vec![Match::InInterface {
                name: iface.to_string(),
                negate: false,
            }],
            Target::Goto(from_wl_chain(iface)),
        ));
        to.push(Rule::new(
            vec![Match::OutInterface {
                name: iface.to_string(),
                negate: false,
            }],
            Target::Goto(to_wl_chain(iface)),
        ));
    }
    from.push(Rule::new(vec![], Target::Drop).with_comment("unknown interface"));
    to.push(Rule::new(vec![], Target::Drop).with_comment("unknown interface"));
    vec![
        Chain {
            name: FROM_WL_DISPATCH.into(),
            rules: from,
        },
        Chain {
            name: TO_WL_DISPATCH.into(),
            rules: to,
        },
    ]
}
