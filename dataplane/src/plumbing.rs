use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use calico_core::model::MacAddr;
use ipnet::IpNet;

use crate::DataplaneError;

/// Everything needed to wire one workload interface (reference 2.5, `container add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// The workload's network namespace: a name under /var/run/netns, or a path.
    pub netns: String,
    /// Host-side end, `cali` + 11 characters of the endpoint id.
    pub host_iface: String,
    /// Name of the workload end while still in the host namespace, `tmp` + 11 characters.
    pub temp_iface: String,
    /// Name of the workload end inside the namespace (`eth1` by default, `--interface`).
    pub workload_iface: String,
    /// Addresses for the workload end (/32 and /128).
    pub addrs: Vec<IpNet>,
    /// IPv4 next hop of the workload's default route (reached on-link through proxy ARP).
    pub gateway_v4: Option<Ipv4Addr>,
    /// IPv6 next hop of the workload's default route.
    pub gateway_v6: Option<Ipv6Addr>,
}

/// The namespace plumbing `calicoctl container add/remove/ip` performs; shared by the Linux
/// implementation and the simulator so both run the same CLI code.
#[async_trait]
pub trait WorkloadPlumbing: Send + Sync {
    /// Whether the workload namespace exists (the container is "running").
    async fn namespace_exists(&self, netns: &str) -> Result<bool, DataplaneError>;

    /// Like `ip link add <host> type veth peer name <temp>`, `ip link set <temp> netns <ns>`,
    /// rename to `workload_iface`, `ip addr add`, `ip route replace <gw> dev <if>` and
    /// `ip route replace default via <gw> dev <if>`. All or nothing: on failure every step done
    /// is undone before the error returns.
    ///
    /// Returns the MAC of the workload-side interface.
    async fn add_veth(&self, spec: &VethSpec) -> Result<MacAddr, DataplaneError>;

    /// Like `ip link del <host_iface>` (which removes the peer too). Absent is not an error.
    async fn remove_veth(&self, host_iface: &str) -> Result<(), DataplaneError>;

    /// Like `ip addr add <addr> dev <iface>` inside the namespace.
    async fn add_addr(&self, netns: &str, iface: &str, addr: IpNet) -> Result<(), DataplaneError>;

    /// Like `ip route replace <gw> dev <iface> scope link` and `ip route replace default via
    /// <gw> dev <iface>` inside the namespace: the default route of `gw`'s family, as
    /// `add_veth` gives the family of the first address.
    async fn add_gateway_routes(
        &self,
        netns: &str,
        iface: &str,
        gw: IpAddr,
    ) -> Result<(), DataplaneError>;

    /// Like `ip addr del <addr> dev <iface>` inside the namespace.
    async fn remove_addr(
        &self,
        netns: &str,
        iface: &str,
        addr: IpNet,
    ) -> Result<(), DataplaneError>;
}
