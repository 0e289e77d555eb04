//! The oracle's reading of host endpoint egress policy (reference
//! `calico-v1-policy-and-routing.md` 4.4), restated from the reference rather than taken from
//! the compiler: what a host itself sends out of one of its interfaces.
//!
//! - Out of a workload interface (the host's interface prefix): never policed.
//! - Otherwise the host endpoint of that host is the one naming the interface, or else one
//!   without a name that expects the packet's source address; several: the smallest id.
//!   None: not policed.
//! - The outbound failsafe ports (`FailsafeOutboundHostPorts`, Felix's defaults plus BGP)
//!   always pass.
//! - Then the egress policies selecting the host endpoint decide as a workload's do, or, when
//!   none selects it, its profiles; a host endpoint with neither drops everything else.
//!
//! Only the config lookup ([`HostConfig`]: interface prefix and failsafe lists, with their
//! defaults) is shared with the compiler; the policy semantics are the oracle's own.

use std::net::IpAddr;

use calico_core::compute::HostConfig;
use calico_core::iptables::IpFamily;

use super::{Decision, Direction, Labelled, Oracle, Packet};
use crate::probe::Probe;

impl Oracle<'_> {
    /// Whether host endpoint policy lets a new flow that `host` itself sends from `src` to
    /// `dst` leave through `out_iface`. Only the sending side: the receiver's policy, routes
    /// and listeners are the caller's to know.
    pub fn decide_host_egress(
        &self,
        host: &str,
        out_iface: &str,
        (src, dst): (IpAddr, IpAddr),
        probe: Probe,
    ) -> Decision {
        let cfg = HostConfig::resolve(self.state, host);
        if out_iface.starts_with(&cfg.interface_prefix) {
            return Decision::allow(format!(
                "{out_iface} is a workload interface: host to workload traffic is not policed"
            ));
        }
        let claimed = self
            .state
            .host_endpoints
            .iter()
            .filter(|(id, _)| id.host == host)
            .find(|(_, hep)| match &hep.name {
                Some(name) => name == out_iface,
                None => hep.expected_ips().any(|ip| ip == src),
            });
        let Some((id, hep)) = claimed else {
            return Decision::allow(format!("no host endpoint of {host} claims {out_iface}"));
        };
        let failsafe = probe.ports().is_some_and(|(_, port)| {
            cfg.failsafe_outbound
                .iter()
                .any(|(p, fp)| p.number() == probe.protocol().number() && *fp == port)
        });
        if failsafe {
            return Decision::allow(format!("outbound failsafe port of host endpoint {id}"));
        }
        let family = if dst.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        };
        let packet = Packet {
            src,
            dst,
            family,
            probe,
        };
        let ep = Labelled {
            labels: &hep.labels,
            profile_ids: &hep.profile_ids,
        };
        match self.policy(ep, Direction::Outbound, &packet) {
            Ok(reason) => Decision::allow(reason),
            Err(reason) => Decision::deny(format!("outbound of host endpoint {id}: {reason}")),
        }
    }
}
