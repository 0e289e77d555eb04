use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The AS number BGP uses when neither the host nor the global config sets one.
pub const DEFAULT_AS: u32 = 64511;

/// An AS number, parsed from asplain (`64511`) or asdot (`1.10` = 65546), stored as asplain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsNumber(pub u32);

impl AsNumber {
    /// `n` unless it is 0, which RFC 7607 reserves and BGP speakers refuse.
    pub fn new(n: u32) -> Option<AsNumber> {
        (n != 0).then_some(AsNumber(n))
    }
}

impl FromStr for AsNumber {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        let bad = || {
            ModelError::field(
                "AS number",
                s,
                "expected 1-4294967295 or a.b with a, b < 65536 (AS 0 is reserved)",
            )
        };
        let n = match s.split_once('.') {
            Some((hi, lo)) => {
                let hi: u32 = hi.parse().map_err(|_| bad())?;
                let lo: u32 = lo.parse().map_err(|_| bad())?;
                if hi > 0xffff || lo > 0xffff {
                    return Err(bad());
                }
                hi * 65536 + lo
            }
            None => s.parse().map_err(|_| bad())?,
        };
        AsNumber::new(n).ok_or_else(bad)
    }
}

impl std::fmt::Display for AsNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A BGP peer (`/calico/bgp/v1/global/peer_v4/<ip>` or `.../host/<h>/peer_v4/<ip>`):
/// `{"ip": "<ip>", "as_num": "<asn string>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpPeer {
    pub ip: IpAddr,
    #[serde(with = "as_string")]
    pub as_num: AsNumber,
}

/// `/calico/bgp/v1/global/node_mesh`: `{"enabled": true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMesh {
    pub enabled: bool,
}

/// BIRD's debug level (`/calico/bgp/v1/global/loglevel` and per host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BgpLogLevel {
    None,
    Debug,
    Info,
}

impl FromStr for BgpLogLevel {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "none" => Ok(BgpLogLevel::None),
            "debug" => Ok(BgpLogLevel::Debug),
            "info" => Ok(BgpLogLevel::Info),
            _ => Err(ModelError::field(
                "BGP log level",
                s,
                "expected none, debug or info",
            )),
        }
    }
}

impl std::fmt::Display for BgpLogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BgpLogLevel::None => "none",
            BgpLogLevel::Debug => "debug",
            BgpLogLevel::Info => "info",
        })
    }
}

mod as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::AsNumber;

    pub fn serialize<S: Serializer>(asn: &AsNumber, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(asn)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AsNumber, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .and_then(AsNumber::new)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid AS number {n}"))),
            other => Err(serde::de::Error::custom(format!(
                "invalid AS number {other}"
            ))),
        }
    }
}
