//! `LinuxPlumbing`: reference 2.5 steps 6–9 with iproute2, all or nothing.
//!
//! The pair is created and its host end brought up in the caller's namespace; the steps inside
//! the workload namespace (rename, up, addresses, the two routes) go to one `ip -n <ns> -batch`
//! process. A namespace given as a path (`/proc/<pid>/ns/net`) is reached through a temporary
//! name under `/var/run/netns`, as the original did. Any failure after the pair exists
//! deletes it (`ip link del <host>` removes the peer wherever it is).
//!
//! Step 5 (renumbering metric-0 default routes in the workload) is not done: the default
//! route we add is `replace`d, and the namespaces this plumbing is used on have no other.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use calico_core::model::MacAddr;
use ipnet::IpNet;

use super::cmd::Runner;
use super::route::read_links;
use crate::{DataplaneError, VethSpec, WorkloadPlumbing};

const NETNS_DIR: &str = "/var/run/netns";

static TEMP_NAMES: AtomicUsize = AtomicUsize::new(0);

/// Workload plumbing on the host this process runs on.
#[derive(Debug, Clone, Default)]
pub struct LinuxPlumbing {
    runner: Runner,
}

/// A namespace name usable with `ip -n`; a temporary link for a path, removed on drop.
struct NsHandle {
    name: String,
    temp_link: Option<std::path::PathBuf>,
}

impl Drop for NsHandle {
    fn drop(&mut self) {
        if let Some(link) = &self.temp_link {
            // Only our own symlink; the namespace lives on through its owner.
            let _ = std::fs::remove_file(link);
        }
    }
}

fn ns_name(netns: &str) -> Option<&str> {
    let name = netns
        .strip_prefix("/var/run/netns/")
        .or_else(|| netns.strip_prefix("/run/netns/"))
        .unwrap_or(netns);
    (!name.contains('/') && !name.is_empty() && name != "." && name != "..").then_some(name)
}

fn open_ns(netns: &str) -> Result<NsHandle, DataplaneError> {
    let not_found = || DataplaneError::NamespaceNotFound {
        netns: netns.to_string(),
    };
    if let Some(name) = ns_name(netns) {
        if !Path::new(NETNS_DIR).join(name).exists() {
            return Err(not_found());
        }
        return Ok(NsHandle {
            name: name.to_string(),
            temp_link: None,
        });
    }
    if !Path::new(netns).exists() {
        return Err(not_found());
    }
    let name = format!(
        "calirs-tmp-{}-{}",
        std::process::id(),
        TEMP_NAMES.fetch_add(1, Ordering::Relaxed)
    );
    let link = Path::new(NETNS_DIR).join(&name);
    std::fs::create_dir_all(NETNS_DIR)
        .and_then(|()| std::os::unix::fs::symlink(netns, &link))
        .map_err(|source| DataplaneError::Io {
            operation: format!("linking namespace {netns} as {}", link.display()),
            source,
        })?;
    Ok(NsHandle {
        name,
        temp_link: Some(link),
    })
}

impl LinuxPlumbing {
    pub fn new() -> Self {
        LinuxPlumbing::default()
    }

    /// The log of every `ip` process started.
    pub fn command_log(&self) -> &super::cmd::CommandLog {
        self.runner.log()
    }

    fn ip(&self, operation: &str, args: &[&str]) -> Result<String, DataplaneError> {
        self.runner.run(operation, "ip", args, None)
    }

    /// Steps 6 (second half) to 9 once the pair exists.
    fn wire_up(&self, spec: &VethSpec, ns: &NsHandle) -> Result<MacAddr, DataplaneError> {
        let host = spec.host_iface.as_str();
        let temp = spec.temp_iface.as_str();
        let iface = spec.workload_iface.as_str();
        self.ip(&format!("setting {host} up"), &["link", "set", host, "up"])?;
        self.ip(
            &format!("moving {temp} into namespace {}", spec.netns),
            &["link", "set", temp, "netns", &ns.name],
        )?;
        let mut batch = format!("link set {temp} name {iface}\nlink set {iface} up\n");
        for addr in &spec.addrs {
            let nodad = if addr.addr().is_ipv6() { " nodad" } else { "" };
            batch += &format!("addr add {addr} dev {iface}{nodad}\n");
        }
        let gateways = [
            spec.gateway_v4.map(IpAddr::V4),
            spec.gateway_v6.map(IpAddr::V6),
        ];
        // `ip -batch` takes no per-line `-6`; iproute2 infers the family from the address.
        for gw in gateways.into_iter().flatten() {
            batch += &format!("route replace {gw} dev {iface} scope link\n");
            batch += &format!("route replace default via {gw} dev {iface}\n");
        }
        self.runner.run(
            &format!("configuring {iface} in namespace {}", spec.netns),
            "ip",
            &["-n", &ns.name, "-batch", "-"],
            Some(&batch),
        )?;
        read_links(&self.runner, Some(&ns.name))?
            .remove(iface)
            .flatten()
            .ok_or_else(|| DataplaneError::InterfaceNotFound {
                iface: format!("{iface} in namespace {}", spec.netns),
            })
    }
}

#[async_trait]
impl WorkloadPlumbing for LinuxPlumbing {
    async fn namespace_exists(&self, netns: &str) -> Result<bool, DataplaneError> {
        Ok(match ns_name(netns) {
            Some(name) => Path::new(NETNS_DIR).join(name).exists(),
            None => Path::new(netns).exists(),
        })
    }

    async fn add_veth(&self, spec: &VethSpec) -> Result<MacAddr, DataplaneError> {
        let ns = open_ns(&spec.netns)?;
        let links = read_links(&self.runner, None)?;
        for name in [&spec.host_iface, &spec.temp_iface] {
            if links.contains_key(name) {
                return Err(DataplaneError::InterfaceExists {
                    iface: name.clone(),
                });
            }
        }
        self.ip(
            &format!("adding veth {} peer {}", spec.host_iface, spec.temp_iface),
            &[
                "link",
                "add",
                &spec.host_iface,
                "type",
                "veth",
                "peer",
                "name",
                &spec.temp_iface,
            ],
        )?;
        let wired = self.wire_up(spec, &ns);
        if wired.is_err() {
            // Ours, just created: deleting the host end removes the peer wherever it is.
            let _ = self.ip(
                &format!("deleting half-plumbed {}", spec.host_iface),
                &["link", "del", &spec.host_iface],
            );
        }
        wired
    }

    async fn remove_veth(&self, host_iface: &str) -> Result<(), DataplaneError> {
        if !read_links(&self.runner, None)?.contains_key(host_iface) {
            return Ok(());
        }
        self.ip(
            &format!("deleting {host_iface}"),
            &["link", "del", host_iface],
        )?;
        Ok(())
    }

    async fn add_addr(&self, netns: &str, iface: &str, addr: IpNet) -> Result<(), DataplaneError> {
        let ns = open_ns(netns)?;
        let addr_text = addr.to_string();
        let mut args = vec!["-n", &ns.name, "addr", "add", &addr_text, "dev", iface];
        if addr.addr().is_ipv6() {
            args.push("nodad");
        }
        self.ip(&format!("adding {addr} to {iface} in {netns}"), &args)?;
        Ok(())
    }

    async fn add_gateway_routes(
        &self,
        netns: &str,
        iface: &str,
        gw: IpAddr,
    ) -> Result<(), DataplaneError> {
        let ns = open_ns(netns)?;
        let batch = format!(
            "route replace {gw} dev {iface} scope link\nroute replace default via {gw} dev {iface}\n"
        );
        self.runner.run(
            &format!("adding the default route via {gw} to {iface} in {netns}"),
            "ip",
            &["-n", &ns.name, "-batch", "-"],
            Some(&batch),
        )?;
        Ok(())
    }

    async fn remove_addr(
        &self,
        netns: &str,
        iface: &str,
        addr: IpNet,
    ) -> Result<(), DataplaneError> {
        let ns = open_ns(netns)?;
        let addr_text = addr.to_string();
        self.ip(
            &format!("removing {addr} from {iface} in {netns}"),
            &["-n", &ns.name, "addr", "del", &addr_text, "dev", iface],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_and_paths() {
        assert_eq!(ns_name("workload_A"), Some("workload_A"));
        assert_eq!(ns_name("/var/run/netns/workload_A"), Some("workload_A"));
        assert_eq!(ns_name("/run/netns/x"), Some("x"));
        assert_eq!(ns_name("/proc/1/ns/net"), None);
        assert_eq!(ns_name(".."), None);
    }

    #[test]
    fn a_missing_namespace_is_named_in_the_error() {
        let err = open_ns("calirs-no-such-namespace").err().unwrap();
        assert!(
            matches!(&err, DataplaneError::NamespaceNotFound { netns } if netns == "calirs-no-such-namespace"),
            "{err}"
        );
    }
}
