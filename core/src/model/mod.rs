//! The typed v1 data model: one type per value stored under `/calico`, serialising to the
//! JSON the original wrote.

mod bgp;
mod endpoint;
mod host_endpoint;
mod ipam;
mod labels;
mod mac;
mod policy;
mod pool;
mod rule;
mod status;
mod vtep;

pub use bgp::{AsNumber, BgpLogLevel, BgpPeer, NodeMesh, DEFAULT_AS};
pub use endpoint::{EndpointId, EndpointState, WorkloadEndpoint};
pub use host_endpoint::{HostEndpoint, HostEndpointId};
pub use ipam::{AllocationAttribute, AllocationBlock, IpamHandle, BLOCK_SIZE};
pub use labels::{validate_label_key, validate_label_value, validate_labels, LabelMap};
pub use mac::MacAddr;
pub use policy::{policy_order, validate_policy_name, Order, Policy, PolicyType, ProfileLabels};
pub use pool::IpPool;
pub use rule::{insert_position, Action, PortRange, Protocol, Rule, Rules};
pub use status::FelixStatus;
pub use vtep::{Vtep, VXLAN_DEVICE, VXLAN_MTU, VXLAN_PORT, VXLAN_VNI};

/// Global Felix config defaults `calicoctl node` writes when absent (reference 1.7).
pub const GLOBAL_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    ("InterfacePrefix", "cali"),
    ("LogSeverityFile", "none"),
    ("LogSeverityScreen", "info"),
    ("LogFilePath", "none"),
    ("IpInIpEnabled", "false"),
];

/// The default pools `calicoctl node` creates when no pool of that family exists.
pub const DEFAULT_POOL_V4: &str = "192.168.0.0/16";
pub const DEFAULT_POOL_V6: &str = "fd80:24e2:f998:72d6::/64";
