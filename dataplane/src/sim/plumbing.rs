//! `impl WorkloadPlumbing for SimDataplane`: reference 2.5 steps 6–9 on the simulated kernel,
//! all or nothing. (Step 5, renumbering metric-0 default routes, has nothing to do here: the
//! simulator keeps one route per destination and a fresh namespace has no default route.)

use std::net::IpAddr;

use async_trait::async_trait;
use calico_core::model::MacAddr;
use ipnet::IpNet;

use super::kernel::{Kernel, ROOT_NS};
use super::route::{KernelRoute, RouteProto};
use super::SimDataplane;
use crate::{DataplaneError, VethSpec, WorkloadPlumbing};

/// `/var/run/netns/<name>` (or `/run/netns/<name>`) → `<name>`; other strings as they are.
fn ns_name(netns: &str) -> &str {
    netns
        .strip_prefix("/var/run/netns/")
        .or_else(|| netns.strip_prefix("/run/netns/"))
        .unwrap_or(netns)
}

fn host_route(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Steps 6–9 once the pair exists; any error leaves the caller to delete the pair.
fn wire_up(k: &mut Kernel, spec: &VethSpec, ns: &str) -> Result<MacAddr, DataplaneError> {
    k.link_set_up(ROOT_NS, &spec.host_iface, true)?;
    k.link_set_ns(ROOT_NS, &spec.temp_iface, ns)?;
    k.link_rename(ns, &spec.temp_iface, &spec.workload_iface)?;
    let iface = spec.workload_iface.as_str();
    k.link_set_up(ns, iface, true)?;
    for addr in &spec.addrs {
        k.addr_add(ns, iface, *addr)?;
    }
    let gateways = [
        spec.gateway_v4.map(IpAddr::V4),
        spec.gateway_v6.map(IpAddr::V6),
    ];
    for gw in gateways.into_iter().flatten() {
        gateway_routes(k, ns, iface, gw)?;
    }
    k.link(ns, iface)
        .map(|l| l.mac)
        .ok_or_else(|| DataplaneError::InterfaceNotFound {
            iface: iface.to_string(),
        })
}

/// The on-link route to `gw` and the default route via it.
fn gateway_routes(k: &mut Kernel, ns: &str, iface: &str, gw: IpAddr) -> Result<(), DataplaneError> {
    k.route_replace(
        ns,
        KernelRoute::dev(host_route(gw), iface, RouteProto::Static),
    )?;
    let default = match gw {
        IpAddr::V4(_) => "0.0.0.0/0",
        IpAddr::V6(_) => "::/0",
    };
    let default: IpNet = default.parse().map_err(|_| DataplaneError::Kernel {
        operation: "adding default route".to_string(),
        reason: "bad default prefix".to_string(),
    })?;
    k.route_replace(
        ns,
        KernelRoute::via(default, gw, Some(iface), RouteProto::Static),
    )
}

#[async_trait]
impl WorkloadPlumbing for SimDataplane {
    async fn namespace_exists(&self, netns: &str) -> Result<bool, DataplaneError> {
        Ok(self.lock().namespaces.contains_key(ns_name(netns)))
    }

    async fn add_veth(&self, spec: &VethSpec) -> Result<MacAddr, DataplaneError> {
        let ns = ns_name(&spec.netns);
        let mut k = self.lock();
        if ns == ROOT_NS {
            return Err(DataplaneError::Kernel {
                operation: format!("moving {} into namespace {ns}", spec.temp_iface),
                reason: "that is the host namespace".to_string(),
            });
        }
        k.ns(ns)?;
        k.veth_add(ROOT_NS, &spec.host_iface, &spec.temp_iface)?;
        let wired = wire_up(&mut k, spec, ns);
        if wired.is_err() {
            // The pair is ours: deleting the host end removes the peer wherever it is.
            k.link_del(ROOT_NS, &spec.host_iface);
        }
        wired
    }

    async fn remove_veth(&self, host_iface: &str) -> Result<(), DataplaneError> {
        self.lock().link_del(ROOT_NS, host_iface);
        Ok(())
    }

    async fn add_addr(&self, netns: &str, iface: &str, addr: IpNet) -> Result<(), DataplaneError> {
        self.lock().addr_add(ns_name(netns), iface, addr)
    }

    async fn add_gateway_routes(
        &self,
        netns: &str,
        iface: &str,
        gw: IpAddr,
    ) -> Result<(), DataplaneError> {
        gateway_routes(&mut self.lock(), ns_name(netns), iface, gw)
    }

    async fn remove_addr(
        &self,
        netns: &str,
        iface: &str,
        addr: IpNet,
    ) -> Result<(), DataplaneError> {
        self.lock().addr_del(ns_name(netns), iface, addr)
    }
}
