//! `calicoctl pool` (reference 2.4).

use std::net::IpAddr;

use calico_backends::{Datastore, DatastoreError, TunnelAddrChange};
use calico_core::keys::IpVersion;
use calico_core::model::IpPool;
use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use serde_json::json;

use super::args::parse_as;
use super::output::{self, Table};
use super::{no_more, Args, CtlError};

pub(crate) async fn run(ds: &Datastore, a: &Args, rest: &[&str]) -> Result<String, CtlError> {
    match rest {
        ["add", cidrs @ ..] if !cidrs.is_empty() => {
            a.allow(&["ipip", "vxlan", "nat-outgoing"])?;
            let pools = cidrs
                .iter()
                .map(|c| make_pool(a, parse_as("pool CIDR", c)?))
                .collect::<Result<Vec<_>, _>>()?;
            ds.put_pools(&pools).await?;
            let added: String = pools
                .iter()
                .map(|p| format!("Added pool {}\n", p.cidr))
                .collect();
            Ok(added + &sync_tunnel_addrs(ds).await?)
        }
        ["range", "add", start, end, more @ ..] => {
            no_more(more)?;
            a.allow(&["ipip", "vxlan", "nat-outgoing"])?;
            let start: IpAddr = parse_as("range start", start)?;
            let end: IpAddr = parse_as("range end", end)?;
            let cidrs = range_cidrs(start, end)?;
            let existing = ds.list_pools(None).await?;
            for c in &cidrs {
                if let Some(p) = existing
                    .iter()
                    .find(|p| p.cidr.contains(&c.network()) || c.contains(&p.cidr.network()))
                {
                    return Err(CtlError::BadArgument {
                        what: "range",
                        value: format!("{start}-{end}"),
                        reason: format!("overlaps existing pool {}", p.cidr),
                    });
                }
            }
            let pools = cidrs
                .into_iter()
                .map(|c| make_pool(a, c))
                .collect::<Result<Vec<_>, _>>()?;
            ds.put_pools(&pools).await?;
            let added: String = pools
                .iter()
                .map(|p| format!("Added pool {}\n", p.cidr))
                .collect();
            Ok(added + &sync_tunnel_addrs(ds).await?)
        }
        ["remove", cidrs @ ..] if !cidrs.is_empty() => {
            a.allow(&[])?;
            let cidrs = cidrs
                .iter()
                .map(|c| parse_as::<IpNet>("pool CIDR", c))
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = String::new();
            for cidr in cidrs {
                // As the original: a CIDR that is no pool is reported, not an error.
                match ds.remove_pool(cidr).await {
                    Ok(()) => out.push_str(&format!("Removed pool {}\n", cidr.trunc())),
                    Err(DatastoreError::PoolNotFound { .. }) => {
                        out.push_str(&format!("{cidr} is not a configured pool.\n"))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(out + &sync_tunnel_addrs(ds).await?)
        }
        ["show", more @ ..] => {
            no_more(more)?;
            a.allow(&["ipv4", "ipv6", "strict"])?;
            let versions: Vec<IpVersion> = match (a.flag("ipv4"), a.flag("ipv6")) {
                (true, false) => vec![IpVersion::V4],
                (false, true) => vec![IpVersion::V6],
                _ => vec![IpVersion::V4, IpVersion::V6],
            };
            let mut out = String::new();
            let mut all = Vec::new();
            let mut broken = Vec::new();
            for v in versions {
                let (pools, unread) = super::lenient(a, ds.list_pools_lenient(Some(v)).await?)?;
                broken.extend(unread);
                let title = if v == IpVersion::V4 { "IPv4 CIDR" } else { "IPv6 CIDR" };
                let mut t = Table::new(&[title, "Options"]);
                for p in &pools {
                    t.row(vec![p.cidr.to_string(), options(p)]);
                }
                out.push_str(&t.render());
                all.extend(pools);
            }
            if a.json()? {
                let mut items: Vec<_> = all
                    .iter()
                    .map(|p| json!({"cidr": p.cidr, "ipip": p.ipip.is_some(), "vxlan": p.vxlan, "nat_outgoing": p.masquerade, "disabled": p.disabled}))
                    .collect();
                items.extend(output::broken_json(&broken));
                return Ok(output::json(&items));
            }
            Ok(out + &output::broken_records(&broken))
        }
        _ => Err(CtlError::MissingArgument {
            what: "pool subcommand: add <CIDRS>... | range add <START> <END> | remove <CIDRS>... | show",
        }),
    }
}

/// After pools change: every registered host's tunnel addresses follow them, as each
/// calico-node's `allocate-ipip-addr` did when the pools changed (a host registered later
/// gets its own at `calicoctl node`).
pub(crate) async fn sync_tunnel_addrs(ds: &Datastore) -> Result<String, CtlError> {
    let mut out = String::new();
    for host in ds.list_hosts().await? {
        for change in ds.ensure_tunnel_addrs(&host.hostname).await? {
            out.push_str(&tunnel_change_line(&host.hostname, &change));
        }
    }
    Ok(out)
}

/// `Assigned tunl0 address 10.1.0.0 to host1` or `Released ... from host1`.
pub(crate) fn tunnel_change_line(host: &str, change: &TunnelAddrChange) -> String {
    let TunnelAddrChange { device, ip, .. } = change;
    if change.assigned {
        format!("Assigned {device} address {ip} to {host}\n")
    } else {
        format!("Released {device} address {ip} from {host}\n")
    }
}

fn make_pool(a: &Args, cidr: IpNet) -> Result<IpPool, CtlError> {
    let mut pool = IpPool::new(cidr);
    if a.flag("vxlan") {
        let reason = if matches!(cidr, IpNet::V6(_)) {
            Some("--vxlan is only supported on IPv4 pools")
        } else if a.flag("ipip") {
            Some("--ipip and --vxlan exclude each other")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(CtlError::BadArgument {
                what: "pool",
                value: cidr.to_string(),
                reason: reason.into(),
            });
        }
        pool.vxlan = true;
    }
    if a.flag("ipip") {
        if matches!(cidr, IpNet::V6(_)) {
            return Err(CtlError::BadArgument {
                what: "pool",
                value: cidr.to_string(),
                reason: "--ipip is only supported on IPv4 pools".into(),
            });
        }
        pool.ipip = Some("tunl0".into());
    }
    pool.masquerade = a.flag("nat-outgoing");
    Ok(pool)
}

fn options(p: &IpPool) -> String {
    let mut o = Vec::new();
    if p.ipip.is_some() {
        o.push("ipip");
    }
    if p.vxlan {
        o.push("vxlan");
    }
    if p.masquerade {
        o.push("nat-outgoing");
    }
    if p.disabled {
        o.push("disabled");
    }
    o.join(",")
}

/// The smallest list of CIDRs covering `start..=end`.
fn range_cidrs(start: IpAddr, end: IpAddr) -> Result<Vec<IpNet>, CtlError> {
    let bad = |reason: &str| CtlError::BadArgument {
        what: "range",
        value: format!("{start}-{end}"),
        reason: reason.to_string(),
    };
    match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
            Ok(Ipv4Subnets::new(s, e, 0).map(IpNet::V4).collect())
        }
        (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
            Ok(Ipv6Subnets::new(s, e, 0).map(IpNet::V6).collect())
        }
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            Err(bad("start is after end"))
        }
        _ => Err(bad("start and end are of different IP versions")),
    }
}
