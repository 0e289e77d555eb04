//! `calicoctl node` (reference 2.1, 2.2) and `calicoctl status` (2.3).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use calico_backends::{retry_on_conflict, Datastore, EndpointFilter, TxnPlan};
use calico_core::keys::{IpVersion, Key, IPAM_V2};
use calico_core::model::{AsNumber, BgpPeer};
use serde_json::json;

use super::args::parse_as;
use super::output::{self, Table};
use super::{no_more, Args, Ctl, CtlError, NodeStartOptions};

pub(crate) async fn run(
    ctl: &Ctl,
    ds: &Datastore,
    a: &Args,
    rest: &[&str],
) -> Result<String, CtlError> {
    match rest {
        [] => start(ctl, ds, a).await,
        ["stop", more @ ..] => {
            no_more(more)?;
            a.allow(&["force"])?;
            stop(ctl, ds, a.flag("force")).await
        }
        ["remove", more @ ..] => {
            no_more(more)?;
            a.allow(&["hostname", "remove-endpoints"])?;
            let host = a.value("hostname").unwrap_or(&ctl.hostname);
            remove(ctl, ds, host, a.flag("remove-endpoints")).await
        }
        ["show", more @ ..] => {
            no_more(more)?;
            a.allow(&[])?;
            show(ds, a.json()?).await
        }
        ["bgp", "peer", more @ ..] | ["bgppeer", more @ ..] => {
            peer_cmd(ds, a, Some(&ctl.hostname), more).await
        }
        [other, ..] => Err(CtlError::UnexpectedArgument {
            arg: (*other).to_string(),
        }),
    }
}

/// `... peer add <IP> as <AS>`, `... peer remove <IP>`, `... peer show [--ipv4|--ipv6]`, for
/// one host (`Some`) or global (`None`).
pub(crate) async fn peer_cmd(
    ds: &Datastore,
    a: &Args,
    host: Option<&str>,
    rest: &[&str],
) -> Result<String, CtlError> {
    let scope = host.map_or("global".to_string(), |h| format!("node {h}"));
    match rest {
        ["add", ip, "as", asn, more @ ..] => {
            no_more(more)?;
            a.allow(&[])?;
            let ip: IpAddr = parse_as("peer IP", ip)?;
            let as_num: AsNumber = parse_as("AS number", asn)?;
            ds.put_bgp_peer(host, &BgpPeer { ip, as_num }).await?;
            Ok(format!("Added {scope} BGP peer {ip} (AS {as_num})\n"))
        }
        ["remove", ip, more @ ..] => {
            no_more(more)?;
            a.allow(&[])?;
            let ip: IpAddr = parse_as("peer IP", ip)?;
            ds.remove_bgp_peer(host, ip).await?;
            Ok(format!("Removed {scope} BGP peer {ip}\n"))
        }
        ["show", more @ ..] => {
            no_more(more)?;
            a.allow(&["ipv4", "ipv6"])?;
            let version = match (a.flag("ipv4"), a.flag("ipv6")) {
                (true, false) => Some(IpVersion::V4),
                (false, true) => Some(IpVersion::V6),
                _ => None,
            };
            let peers = ds.list_bgp_peers(host, version).await?;
            if a.json()? {
                return Ok(output::json(&peers));
            }
            let mut t = Table::new(&["Peer address", "AS Num"]);
            for p in peers {
                t.row(vec![p.ip.to_string(), p.as_num.to_string()]);
            }
            Ok(t.render())
        }
        _ => Err(CtlError::MissingArgument {
            what: "peer subcommand: add <PEER_IP> as <AS_NUM> | remove <PEER_IP> | show",
        }),
    }
}

async fn start(ctl: &Ctl, ds: &Datastore, a: &Args) -> Result<String, CtlError> {
    a.allow(&[
        "ip",
        "ip6",
        "as",
        "detach",
        "node-image",
        "log-dir",
        "runtime",
        "backend",
        "no-pull",
        "libnetwork",
        "libnetwork-image",
        "kubernetes",
        "kube-plugin-version",
        "rkt",
    ])?;
    calico_core::names::validate_hostname(&ctl.hostname)?;
    let ip: Ipv4Addr = match a.value("ip") {
        Some(s) => parse_as("--ip (IPv4 address)", s)?,
        None => detect_ipv4().ok_or(CtlError::NoHostAddress)?,
    };
    let ip6: Option<Ipv6Addr> = a
        .value("ip6")
        .map(|s| parse_as("--ip6 (IPv6 address)", s))
        .transpose()?;
    let as_num: Option<AsNumber> = a.value("as").map(|s| parse_as("--as", s)).transpose()?;
    let foreground = match a.value("detach") {
        None | Some("true") => false,
        Some("false") => true,
        Some(other) => {
            return Err(CtlError::BadArgument {
                what: "--detach",
                value: other.to_string(),
                reason: "expected true or false".into(),
            })
        }
    };
    let mut out = String::new();
    for pool in ds.ensure_default_pools().await? {
        out.push_str(&format!("Created default pool {pool}\n"));
    }
    ds.ensure_global_config().await?;
    ds.register_host(&ctl.hostname, ip, ip6, as_num).await?;
    let opts = NodeStartOptions {
        hostname: ctl.hostname.clone(),
        ip,
        ip6,
        foreground,
    };
    ctl.node.start(&opts).await.map_err(|e| CtlError::Node {
        action: format!("starting calico-node on {}", ctl.hostname),
        reason: format!("{e:#}"),
    })?;
    out.push_str(&format!(
        "Calico node {} started with IPv4 {ip}{}{}\n",
        ctl.hostname,
        ip6.map(|i| format!(", IPv6 {i}")).unwrap_or_default(),
        as_num.map(|n| format!(", AS {n}")).unwrap_or_default(),
    ));
    Ok(out)
}

async fn local_endpoints(ds: &Datastore, host: &str) -> Result<Vec<String>, CtlError> {
    Ok(ds
        .list_endpoints(&EndpointFilter {
            host: Some(host.to_string()),
            ..EndpointFilter::default()
        })
        .await?
        .into_iter()
        .map(|(id, _)| id.to_string())
        .collect())
}

async fn stop(ctl: &Ctl, ds: &Datastore, force: bool) -> Result<String, CtlError> {
    if !force {
        let endpoints = local_endpoints(ds, &ctl.hostname).await?;
        if !endpoints.is_empty() {
            return Err(CtlError::HostHasEndpoints {
                host: ctl.hostname.clone(),
                endpoints,
            });
        }
    }
    ctl.node.stop().await.map_err(|e| CtlError::Node {
        action: format!("stopping calico-node on {}", ctl.hostname),
        reason: format!("{e:#}"),
    })?;
    Ok(format!("Node {} stopped\n", ctl.hostname))
}

async fn remove(
    ctl: &Ctl,
    ds: &Datastore,
    host: &str,
    remove_endpoints: bool,
) -> Result<String, CtlError> {
    calico_core::names::validate_hostname(host)?;
    let endpoints = local_endpoints(ds, host).await?;
    if !endpoints.is_empty() && !remove_endpoints {
        return Err(CtlError::HostHasEndpoints {
            host: host.to_string(),
            endpoints,
        });
    }
    let mut veths = Vec::new();
    retry_on_conflict(&format!("removing node {host}"), || async {
        let list = ds
            .list_endpoints(&EndpointFilter {
                host: Some(host.to_string()),
                ..EndpointFilter::default()
            })
            .await?;
        let ips: Vec<IpAddr> = list
            .iter()
            .flat_map(|(_, ep)| ep.value.nets().map(|n| n.addr()).collect::<Vec<_>>())
            .collect();
        let mut plan: TxnPlan = ds.plan_release(&ips).await?;
        for prefix in [
            Key::host_dir(host),
            Key::bgp_host_dir(host),
            format!("{IPAM_V2}host/{host}/"),
        ] {
            for key in ds.list_keys(&prefix).await? {
                plan.delete(key);
            }
        }
        ds.commit(plan).await?;
        Ok(list
            .into_iter()
            .map(|(_, ep)| ep.value.name)
            .collect::<Vec<_>>())
    })
    .await
    .map(|names| veths = names)?;
    let mut problems = Vec::new();
    if host == ctl.hostname {
        for v in &veths {
            if let Err(e) = ctl.plumbing.remove_veth(v).await {
                problems.push(format!("removing veth {v}: {e}"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(CtlError::Dataplane {
            action: format!("removing node {host} (its data is deleted)"),
            reason: problems.join("; "),
        });
    }
    Ok(format!("Node {host} removed\n"))
}

async fn show(ds: &Datastore, json: bool) -> Result<String, CtlError> {
    let hosts = ds.list_hosts().await?;
    if json {
        let items: Vec<_> = hosts
            .iter()
            .map(|h| {
                json!({
                    "hostname": h.hostname,
                    "ip_addr_v4": h.ip_v4,
                    "ip_addr_v6": h.ip_v6,
                    "as_num": h.as_num.map(|a| a.0),
                    "peers": h.peers,
                })
            })
            .collect();
        return Ok(output::json(&items));
    }
    let mut t = Table::new(&[
        "Hostname",
        "Bird IPv4",
        "Bird IPv6",
        "AS Num",
        "BGP Peers v4",
        "BGP Peers v6",
    ]);
    for h in hosts {
        let peers = |v: IpVersion| {
            h.peers
                .iter()
                .filter(|p| IpVersion::of_addr(&p.ip) == v)
                .map(|p| p.ip.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        t.row(vec![
            h.hostname.clone(),
            h.ip_v4.map(|i| i.to_string()).unwrap_or_default(),
            h.ip_v6.map(|i| i.to_string()).unwrap_or_default(),
            h.as_num
                .map_or("(inherited)".to_string(), |a| a.to_string()),
            peers(IpVersion::V4),
            peers(IpVersion::V6),
        ]);
    }
    Ok(t.render())
}

pub(crate) async fn status(ctl: &Ctl, a: &Args, rest: &[&str]) -> Result<String, CtlError> {
    no_more(rest)?;
    a.allow(&[])?;
    let st = ctl.node.status().await.map_err(|e| CtlError::Node {
        action: format!("reading calico-node status on {}", ctl.hostname),
        reason: format!("{e:#}"),
    })?;
    if a.json()? {
        let peers: Vec<_> = st
            .bgp_peers
            .iter()
            .map(|p| {
                json!({"protocol": p.protocol, "peer_address": p.peer, "peer_type": p.peer_type,
                       "state": p.state, "since": p.since, "info": p.info})
            })
            .collect();
        return Ok(output::json(&json!({
            "running": st.running, "detail": st.detail, "bgp_peers": peers,
        })));
    }
    let mut out = format!(
        "calico-node is {}{}\n",
        if st.running { "running" } else { "not running" },
        if st.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", st.detail)
        }
    );
    let mut t = Table::new(&["Peer address", "Peer type", "State", "Since", "Info"]);
    for p in &st.bgp_peers {
        t.row(vec![
            p.peer.clone(),
            p.peer_type.clone(),
            p.state.clone(),
            p.since.clone(),
            p.info.clone(),
        ]);
    }
    out.push_str(&t.render());
    Ok(out)
}

/// This machine's IPv4 address for BGP when `--ip` is absent (reference 2.1 step 4): the last
/// global address in `ip -4 -o addr` output that is not on loopback, docker* or cbr*.
pub fn detect_ipv4() -> Option<Ipv4Addr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .ok()?;
    parse_ip_addr_output(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `ip -4 -o addr` lines like `2: eth0    inet 10.0.0.5/24 brd ... scope global eth0`.
fn parse_ip_addr_output(text: &str) -> Option<Ipv4Addr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let _index = words.next()?;
            let iface = words.next()?.trim_end_matches(':');
            if iface == "lo" || iface.starts_with("docker") || iface.starts_with("cbr") {
                return None;
            }
            let _family = words.next().filter(|w| *w == "inet")?;
            let addr = words.next()?.split('/').next()?;
            addr.parse::<Ipv4Addr>().ok().filter(|a| !a.is_loopback())
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addr_output_skips_loopback_and_docker() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                    2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\n\
                    3: docker0    inet 172.17.0.1/16 scope global docker0\n";
        assert_eq!(parse_ip_addr_output(text), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(
            parse_ip_addr_output("1: lo    inet 127.0.0.1/8 scope host lo\n"),
            None
        );
    }
}
