use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Addresses per IPAM block: a /26 for IPv4, a /122 for IPv6 (reference 1.8).
pub const BLOCK_SIZE: usize = 64;

/// An IPAM block (`/calico/ipam/v2/assignment/ipv4/block/<cidr-dashed>`): which of its 64
/// addresses are taken, and by which handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationBlock {
    pub cidr: IpNet,
    /// `"host:<hostname>"` for the host this block is affine to.
    pub affinity: Option<String>,
    /// One entry per address: `None` when free, else an index into `attributes`.
    pub allocations: Vec<Option<usize>>,
    pub attributes: Vec<AllocationAttribute>,
}

/// Who holds an allocation: a handle id plus free-form attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttribute {
    pub handle_id: Option<String>,
    #[serde(default)]
    pub secondary: BTreeMap<String, String>,
}

/// An IPAM handle (`/calico/ipam/v2/handle/<id>`): how many addresses it holds in each block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamHandle {
    pub id: String,
    pub block: BTreeMap<String, u32>,
}

impl AllocationBlock {
    /// An empty block affine to `host`.
    pub fn new(cidr: IpNet, host: Option<&str>) -> Self {
        AllocationBlock {
            cidr: cidr.trunc(),
            affinity: host.map(|h| format!("host:{h}")),
            allocations: vec![None; BLOCK_SIZE],
            attributes: Vec::new(),
        }
    }
}
