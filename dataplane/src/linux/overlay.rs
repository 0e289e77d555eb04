//! Tunnel devices on Linux: `vxlan.calico` and `tunl0`, the routes through them, and the
//! VXLAN ARP and FDB entries, through iproute2 (`ip link`, `ip route`, `ip neigh`,
//! `bridge fdb`) — like calico-node's own `ip tunnel add` (reference 3.9).
//!
//! Our tunnel routes carry protocol [`RTPROT_CALICO_OVERLAY`], apart from the workload routes
//! ([`super::RTPROT_CALICO`]) that [`super::route`] owns, so neither side takes the other's
//! routes for strays. Our devices are `vxlan.calico` (its name is ours) and `tunl0` once this
//! process set it up: `tunl0` is the ipip module's fallback device, which exists whenever the
//! module is loaded and cannot be deleted, so "deleting" it sets it down without addresses.
//!
//! A kernel without IPIP (`CONFIG_NET_IPIP` unset: `ip tunnel add` says "No such device") is
//! said once in the log and in `<run_dir>/overlay-status` (which `calicoctl status` shows);
//! `tunl0`'s routes then wait (`ApplyReport::waiting`) and everything else is applied.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use calico_core::desired::Neighbour;
use calico_core::model::MacAddr;
use calico_core::tunnel::{self, FdbEntry, Overlay, TunnelDevice, TunnelKind, TunnelRoute};
use ipnet::IpNet;
use serde::Deserialize;

use super::cmd::Runner;
use super::route::json;
use crate::{Change, DataplaneError};

/// `proto` of the routes through our tunnels (next to Felix's 80 for workload routes).
pub const RTPROT_CALICO_OVERLAY: u8 = 81;

/// The devices whose name alone makes them ours.
const OWNED_NAMES: [&str; 1] = [calico_core::model::VXLAN_DEVICE];

/// The file `calicoctl status` reads overlay problems from, in the agent's run directory.
pub const STATUS_FILE: &str = "overlay-status";

#[derive(Debug, Deserialize)]
struct LinkJson {
    ifname: String,
    mtu: u32,
    address: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
    linkinfo: Option<LinkInfo>,
    #[serde(default)]
    addr_info: Vec<AddrJson>,
}

#[derive(Debug, Deserialize)]
struct LinkInfo {
    info_kind: Option<String>,
    info_data: Option<InfoData>,
}

#[derive(Debug, Deserialize)]
struct InfoData {
    id: Option<u32>,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
struct AddrJson {
    family: String,
    local: IpAddr,
    prefixlen: u8,
}

#[derive(Debug, Deserialize)]
struct RouteJson {
    dst: String,
    gateway: Option<IpAddr>,
    dev: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NeighJson {
    dst: IpAddr,
    lladdr: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FdbJson {
    mac: String,
    dst: Option<IpAddr>,
}

/// The overlay part of the Linux dataplane.
#[derive(Debug)]
pub struct Tunnels {
    runner: Runner,
    /// Devices this process set up (`tunl0` counts as ours only then).
    set_up: BTreeSet<String>,
    /// Whether the last `observe` found devices of ours this process did not set up (left by
    /// an earlier run): an apply that wants none must then still remove them. Without it an
    /// apply wanting no overlay starts no process at all.
    leftovers: bool,
    /// Why IPIP cannot work here, once found out (said once).
    ipip_unavailable: Option<String>,
    status_file: PathBuf,
}

impl Tunnels {
    pub fn new(runner: Runner, run_dir: PathBuf) -> Self {
        Tunnels {
            runner,
            set_up: BTreeSet::new(),
            leftovers: false,
            ipip_unavailable: None,
            status_file: run_dir.join(STATUS_FILE),
        }
    }

    /// Why IPIP does not work on this kernel, if it was found not to.
    pub fn ipip_unavailable(&self) -> Option<&str> {
        self.ipip_unavailable.as_deref()
    }

    /// Our tunnel devices, routes, ARP and FDB entries as the kernel holds them.
    ///
    /// # Errors
    /// When `ip` or `bridge` fail or print something that is not their JSON.
    pub fn observe(&mut self) -> Result<Overlay, DataplaneError> {
        let mut out = Overlay::default();
        let text = self
            .runner
            .run("listing links", "ip", &["-d", "-j", "addr", "show"], None)?;
        let links: Vec<LinkJson> = json("ip -d -j addr show output", &text)?;
        for link in links {
            let ours =
                OWNED_NAMES.contains(&link.ifname.as_str()) || self.set_up.contains(&link.ifname);
            if !ours {
                continue;
            }
            if let Some(dev) = device_of(&link) {
                out.devices.insert(dev.name.clone(), dev);
            }
        }
        self.leftovers = out.devices.keys().any(|d| !self.set_up.contains(d));
        if out.devices.is_empty() {
            // Routes, ARP and FDB entries of ours all hang off our devices.
            return Ok(out);
        }
        let proto = RTPROT_CALICO_OVERLAY.to_string();
        let text = self.runner.run(
            "listing overlay routes",
            "ip",
            &["-4", "-j", "route", "show", "proto", &proto],
            None,
        )?;
        for r in json::<RouteJson>("ip -j route show output", &text)? {
            let dst = if r.dst.contains('/') {
                r.dst.parse::<IpNet>().ok()
            } else {
                r.dst.parse::<IpAddr>().ok().map(IpNet::from)
            };
            if let (Some(dst), Some(via), Some(dev)) = (dst, r.gateway, r.dev) {
                out.routes.insert(TunnelRoute { dst, via, dev });
            }
        }
        let vxlan: Vec<String> = out
            .devices
            .values()
            .filter(|d| matches!(d.kind, TunnelKind::Vxlan { .. }))
            .map(|d| d.name.clone())
            .collect();
        for dev in vxlan {
            let text = self.runner.run(
                &format!("listing neighbours of {dev}"),
                "ip",
                &["-j", "neigh", "show", "dev", &dev, "nud", "permanent"],
                None,
            )?;
            for n in json::<NeighJson>("ip -j neigh show output", &text)? {
                if let Some(mac) = n.lladdr.and_then(|m| m.parse::<MacAddr>().ok()) {
                    out.neighbours.insert(Neighbour {
                        ip: n.dst,
                        mac,
                        dev: dev.clone(),
                    });
                }
            }
            let text = self.runner.run(
                &format!("listing the fdb of {dev}"),
                "bridge",
                &["-j", "fdb", "show", "dev", &dev],
                None,
            )?;
            for e in json::<FdbJson>("bridge -j fdb show output", &text)? {
                if let (Ok(mac), Some(dst)) = (e.mac.parse::<MacAddr>(), e.dst) {
                    out.fdb.insert(FdbEntry {
                        mac,
                        dst,
                        dev: dev.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Brings the kernel to `want`; returns the first error after trying every step.
    /// Steps through a device that could not be made (IPIP on a kernel without it) are left
    /// waiting in `waiting`.
    pub fn apply(
        &mut self,
        want: &Overlay,
        changes: &mut Vec<Change>,
        waiting: &mut BTreeSet<String>,
    ) -> Result<(), DataplaneError> {
        if want.devices.is_empty() && self.set_up.is_empty() && !self.leftovers {
            return Ok(());
        }
        let have = self.observe()?;
        let mut first_error = None;
        let mut missing: BTreeSet<String> = BTreeSet::new();
        for step in tunnel::changes(want, &have) {
            let dev = step_device(&step);
            if dev.is_some_and(|d| missing.contains(d)) {
                waiting.extend(dev.map(str::to_string));
                continue;
            }
            match self.execute(&step) {
                Ok(true) => changes.push(step),
                Ok(false) => {
                    let dev = dev.unwrap_or_default().to_string();
                    waiting.insert(dev.clone());
                    missing.insert(dev);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs one step; `Ok(false)` when its device cannot exist on this kernel.
    fn execute(&mut self, step: &Change) -> Result<bool, DataplaneError> {
        let ip = |op: &str, args: &[&str]| self.runner.run(op, "ip", args, None).map(|_| ());
        match step {
            Change::SetTunnel(dev) => return self.set_device(dev),
            Change::DeleteTunnel { name } => {
                if name == "tunl0" {
                    ip(
                        &format!("setting {name} down"),
                        &["link", "set", name, "down"],
                    )?;
                    ip(
                        &format!("flushing the addresses of {name}"),
                        &["addr", "flush", "dev", name],
                    )?;
                } else {
                    ip(&format!("deleting {name}"), &["link", "del", name])?;
                }
                self.set_up.remove(name);
            }
            Change::AddTunnelRoute(r) => {
                let (dst, via, proto) = (
                    r.dst.to_string(),
                    r.via.to_string(),
                    RTPROT_CALICO_OVERLAY.to_string(),
                );
                ip(
                    &format!("adding route {r}"),
                    &[
                        "route", "replace", &dst, "via", &via, "dev", &r.dev, "onlink", "proto",
                        &proto,
                    ],
                )?;
            }
            Change::DelTunnelRoute(r) => {
                let (dst, proto) = (r.dst.to_string(), RTPROT_CALICO_OVERLAY.to_string());
                ip(
                    &format!("deleting route {r}"),
                    &["route", "del", &dst, "dev", &r.dev, "proto", &proto],
                )?;
            }
            Change::AddTunnelNeighbour(n) => {
                let (addr, mac) = (n.ip.to_string(), n.mac.to_string());
                ip(
                    &format!("adding neighbour {addr} lladdr {mac} dev {}", n.dev),
                    &[
                        "neigh",
                        "replace",
                        &addr,
                        "lladdr",
                        &mac,
                        "dev",
                        &n.dev,
                        "nud",
                        "permanent",
                    ],
                )?;
            }
            Change::DelTunnelNeighbour(n) => {
                let addr = n.ip.to_string();
                ip(
                    &format!("deleting neighbour {addr} dev {}", n.dev),
                    &["neigh", "del", &addr, "dev", &n.dev],
                )?;
            }
            Change::AddFdb(e) | Change::DelFdb(e) => {
                let (verb, what) = match step {
                    Change::AddFdb(_) => ("replace", "adding"),
                    _ => ("del", "deleting"),
                };
                let (mac, dst) = (e.mac.to_string(), e.dst.to_string());
                let mut args = vec!["fdb", verb, &mac, "dev", &e.dev, "dst", &dst, "self"];
                if verb == "replace" {
                    args.push("permanent");
                }
                self.runner
                    .run(&format!("{what} fdb entry {e}"), "bridge", &args, None)?;
            }
            // `tunnel::changes` makes no other steps.
            _ => {}
        }
        Ok(true)
    }

    /// Creates `dev` if missing (or of another kind), then sets its MAC, MTU, up, and its
    /// only IPv4 address.
    fn set_device(&mut self, dev: &TunnelDevice) -> Result<bool, DataplaneError> {
        let name = dev.name.as_str();
        let existing = self.read_device(name)?;
        if existing
            .as_ref()
            .is_some_and(|e| e.kind != dev.kind && matches!(dev.kind, TunnelKind::Vxlan { .. }))
        {
            self.runner.run(
                &format!("replacing {name}"),
                "ip",
                &["link", "del", name],
                None,
            )?;
        }
        let exists =
            existing.is_some_and(|e| e.kind == dev.kind || matches!(dev.kind, TunnelKind::Ipip));
        if !exists {
            match dev.kind {
                TunnelKind::Vxlan { vni, port, .. } => {
                    let (vni, port) = (vni.to_string(), port.to_string());
                    self.runner.run(
                        &format!("creating {name}"),
                        "ip",
                        &[
                            "link",
                            "add",
                            name,
                            "type",
                            "vxlan",
                            "id",
                            &vni,
                            "dstport",
                            &port,
                            "nolearning",
                        ],
                        None,
                    )?;
                }
                TunnelKind::Ipip => {
                    let made = self.runner.run(
                        &format!("creating {name}"),
                        "ip",
                        &["tunnel", "add", name, "mode", "ipip"],
                        None,
                    );
                    if let Err(e) = made {
                        if self.read_device(name)?.is_none() {
                            self.ipip_missing(&e);
                            return Ok(false);
                        }
                    }
                }
            }
        }
        let mtu = dev.mtu.to_string();
        let mut args = vec!["link", "set", name, "mtu", &mtu, "up"];
        let mac;
        if let TunnelKind::Vxlan { mac: m, .. } = dev.kind {
            mac = m.to_string();
            args.extend(["address", mac.as_str()]);
        }
        self.runner
            .run(&format!("setting up {name}"), "ip", &args, None)?;
        let have = self.read_device(name)?.and_then(|d| d.addr);
        if have != dev.addr {
            self.runner.run(
                &format!("flushing the IPv4 addresses of {name}"),
                "ip",
                &["-4", "addr", "flush", "dev", name],
                None,
            )?;
            if let Some(addr) = dev.addr {
                let net = format!("{addr}/32");
                self.runner.run(
                    &format!("adding {net} to {name}"),
                    "ip",
                    &["addr", "add", &net, "dev", name],
                    None,
                )?;
            }
        }
        self.set_up.insert(name.to_string());
        if matches!(dev.kind, TunnelKind::Ipip) && self.ipip_unavailable.take().is_some() {
            let _ = std::fs::remove_file(&self.status_file);
        }
        Ok(true)
    }

    fn read_device(&self, name: &str) -> Result<Option<TunnelDevice>, DataplaneError> {
        let text = self
            .runner
            .run("listing links", "ip", &["-d", "-j", "addr", "show"], None)?;
        let links: Vec<LinkJson> = json("ip -d -j addr show output", &text)?;
        Ok(links
            .iter()
            .filter(|l| l.ifname == name)
            .find_map(device_of))
    }

    /// Says once (log and status file) that this kernel cannot do IPIP.
    fn ipip_missing(&mut self, error: &DataplaneError) {
        if self.ipip_unavailable.is_some() {
            return;
        }
        let reason = format!(
            "IPIP unavailable: this kernel has no IPIP support (CONFIG_NET_IPIP is not set); \
             tunl0 and the routes of IPIP pools are not programmed, everything else is ({error})"
        );
        tracing::warn!("{reason}");
        if let Err(e) = std::fs::write(&self.status_file, format!("{reason}\n")) {
            tracing::warn!("writing {}: {e}", self.status_file.display());
        }
        self.ipip_unavailable = Some(reason);
    }
}

/// The device a step goes through.
fn step_device(step: &Change) -> Option<&str> {
    match step {
        Change::SetTunnel(d) => Some(&d.name),
        Change::AddTunnelRoute(r) | Change::DelTunnelRoute(r) => Some(&r.dev),
        Change::AddTunnelNeighbour(n) | Change::DelTunnelNeighbour(n) => Some(&n.dev),
        Change::AddFdb(e) | Change::DelFdb(e) => Some(&e.dev),
        Change::DeleteTunnel { name } => Some(name),
        _ => None,
    }
}

/// A tunnel device as `ip -d -j addr show` lists it; `None` for other kinds of link. A
/// device that is down counts as not set up (its MTU, address and state get set again).
fn device_of(link: &LinkJson) -> Option<TunnelDevice> {
    let info = link.linkinfo.as_ref()?;
    let kind = match info.info_kind.as_deref()? {
        "vxlan" => {
            let data = info.info_data.as_ref()?;
            TunnelKind::Vxlan {
                vni: data.id?,
                port: data.port?,
                mac: link.address.as_deref()?.parse().ok()?,
            }
        }
        "ipip" => TunnelKind::Ipip,
        _ => return None,
    };
    let v4: BTreeMap<Ipv4Addr, u8> = link
        .addr_info
        .iter()
        .filter(|a| a.family == "inet")
        .filter_map(|a| match a.local {
            IpAddr::V4(v4) => Some((v4, a.prefixlen)),
            IpAddr::V6(_) => None,
        })
        .collect();
    // Exactly one /32 is the state we set; anything else differs from every desired device.
    let addr = match v4.iter().next() {
        Some((a, 32)) if v4.len() == 1 => Some(*a),
        _ if v4.is_empty() => None,
        _ => Some(Ipv4Addr::UNSPECIFIED),
    };
    let up = link.flags.iter().any(|f| f == "UP");
    Some(TunnelDevice {
        name: link.ifname.clone(),
        kind,
        mtu: if up { link.mtu } else { 0 },
        addr,
    })
}
