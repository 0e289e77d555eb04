//! `calicoctl node` (reference 2.1, 2.2) and `calicoctl status` (2.3).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use calico_backends::{retry_on_conflict, Datastore, EndpointFilter, TxnOp, TxnPlan, Versioned};
use calico_core::codec::{decode, Value};
use calico_core::keys::{IpVersion, Key, FELIX_V1, IPAM_V2};
use calico_core::model::EndpointId;
use calico_core::model::{AllocationBlock, AsNumber, BgpPeer};
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
            a.allow(&["ipv4", "ipv6", "strict"])?;
            let version = match (a.flag("ipv4"), a.flag("ipv6")) {
                (true, false) => Some(IpVersion::V4),
                (false, true) => Some(IpVersion::V6),
                _ => None,
            };
            let (peers, broken) =
                super::lenient(a, ds.list_bgp_peers_lenient(host, version).await?)?;
            if a.json()? {
                let mut items: Vec<_> = peers.iter().map(|p| json!(p)).collect();
                items.extend(output::broken_json(&broken));
                return Ok(output::json(&items));
            }
            let mut t = Table::new(&["Peer address", "AS Num"]);
            for p in peers {
                t.row(vec![p.ip.to_string(), p.as_num.to_string()]);
            }
            Ok(t.render() + &output::broken_records(&broken))
        }
        _ => Err(CtlError::MissingArgument {
            what: "peer subcommand: add <PEER_IP> as <AS_NUM> | remove <PEER_IP> | show",
        }),
    }
}

/// What `calicoctl node` does with the original's options that have no meaning here (the
/// agent is a process, not a `calico/node` image): warn and go on where ignoring them
/// changes nothing the user relies on, refuse where the user asked for something we do not
/// provide (a libnetwork plugin, Kubernetes or rkt plugins).
fn check_image_options(a: &Args) -> Result<Vec<String>, CtlError> {
    let refused = |option: &str, reason: &str| {
        Err(CtlError::BadArgument {
            what: "option",
            value: format!("--{option}"),
            reason: reason.into(),
        })
    };
    for option in ["libnetwork", "libnetwork-image"] {
        if a.flag(option) || a.value(option).is_some() {
            return refused(
                option,
                "calico-rs has no Docker libnetwork plugin; use calicoctl container add",
            );
        }
    }
    for option in ["kubernetes", "kube-plugin-version", "rkt"] {
        if a.flag(option) || a.value(option).is_some() {
            return refused(
                option,
                "calico-rs does not install Kubernetes or rkt plugins",
            );
        }
    }
    let mut warnings = Vec::new();
    if let Some(image) = a.value("node-image") {
        warnings.push(format!(
            "--node-image={image} ignored: calico-node runs as the calico-node binary next to calicoctl, not an image"
        ));
    }
    if a.flag("no-pull") {
        warnings.push("--no-pull ignored: there is no image to pull".to_owned());
    }
    Ok(warnings)
}

/// `--runtime`: whether to start the agent (`none`: configure the host only).
fn start_runtime(a: &Args) -> Result<bool, CtlError> {
    match a.value("runtime") {
        None | Some("docker") => Ok(true),
        Some("none") => Ok(false),
        Some(other) => Err(CtlError::BadArgument {
            what: "--runtime",
            value: other.to_string(),
            reason: "expected docker (calico-node started as a process) or none".into(),
        }),
    }
}

/// `--backend`: whether the node is policy only (`none`).
fn policy_only(a: &Args) -> Result<bool, CtlError> {
    match a.value("backend") {
        None | Some("bird") => Ok(false),
        Some("none") => Ok(true),
        Some(other) => Err(CtlError::BadArgument {
            what: "--backend",
            value: other.to_string(),
            reason: "expected bird or none (gobgp is not supported)".into(),
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
    let warnings = check_image_options(a)?;
    let run_agent = start_runtime(a)?;
    let policy_only = policy_only(a)?;
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
    let log_dir = match a.value("log-dir") {
        Some("") => {
            return Err(CtlError::BadArgument {
                what: "--log-dir",
                value: String::new(),
                reason: "expected a directory".into(),
            })
        }
        Some(dir) => Some(std::path::PathBuf::from(dir)),
        None => None,
    };
    for w in &warnings {
        eprintln!("Warning: {w}");
    }
    let mut out = String::new();
    for pool in ds.ensure_default_pools().await? {
        out.push_str(&format!("Created default pool {pool}\n"));
    }
    ds.ensure_global_config().await?;
    ds.register_host(&ctl.hostname, ip, ip6, as_num).await?;
    for change in ds.ensure_tunnel_addrs(&ctl.hostname).await? {
        out.push_str(&super::pool::tunnel_change_line(&ctl.hostname, &change));
    }
    let opts = NodeStartOptions {
        hostname: ctl.hostname.clone(),
        ip,
        ip6,
        foreground,
        log_dir,
        policy_only,
    };
    let addresses = format!(
        "IPv4 {ip}{}{}",
        ip6.map(|i| format!(", IPv6 {i}")).unwrap_or_default(),
        as_num.map(|n| format!(", AS {n}")).unwrap_or_default(),
    );
    if !run_agent {
        // As the original with --runtime=none: the host is configured, the services are
        // the user's to run.
        out.push_str(&format!(
            "Calico node {} configured with {addresses}; calico-node was not started (--runtime=none).\n",
            ctl.hostname
        ));
        match ctl.node.manual_start(&opts) {
            Some(cmd) => out.push_str(&format!(
                "Run it yourself (as root, with this shell's CALICO_*/ETCD_* environment):\n  {cmd}\n"
            )),
            None => out.push_str("Start this host's agent yourself.\n"),
        }
        return Ok(out);
    }
    ctl.node.start(&opts).await.map_err(|e| CtlError::Node {
        action: format!("starting calico-node on {}", ctl.hostname),
        reason: format!("{e:#}"),
    })?;
    out.push_str(&format!(
        "Calico node {} started with {addresses}{}\n",
        ctl.hostname,
        if policy_only {
            " (policy only: no BGP)"
        } else {
            ""
        }
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
            // The original: "Current host has active endpoints so can't be stopped. Force
            // with --force".
            return Err(CtlError::Node {
                action: format!("not stopping node {}", ctl.hostname),
                reason: format!(
                    "it has active endpoints {}; stop it anyway with --force",
                    endpoints.join(", ")
                ),
            });
        }
    }
    ctl.node.stop().await.map_err(|e| CtlError::Node {
        action: format!("stopping calico-node on {}", ctl.hostname),
        reason: format!("{e:#}"),
    })?;
    Ok(format!("Node {} stopped\n", ctl.hostname))
}

/// `node remove` (reference 2.2, CC23): refuses while this host's agent runs or while
/// endpoints exist (unless `--remove-endpoints`); then in one transaction releases the
/// endpoints' and its tunnel addresses, gives up the host's IPAM blocks as libcalico's
/// `release_host_affinities` did (an empty block is deleted, a block still holding
/// borrowed addresses loses its affinity) and deletes the host's Felix, BGP, Felix-status
/// and IPAM-affinity trees; finally the veths of removed endpoints on this host go.
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
    if host == ctl.hostname {
        let running = ctl.node.status().await.is_ok_and(|s| s.running);
        if running {
            return Err(CtlError::Node {
                action: format!("not removing node {host}"),
                reason: "calico-node is running on it; run calicoctl node stop first".into(),
            });
        }
    }
    let veths = retry_on_conflict(&format!("removing node {host}"), || async {
        let list = ds
            .list_endpoints(&EndpointFilter {
                host: Some(host.to_string()),
                ..EndpointFilter::default()
            })
            .await?;
        let mut ips: Vec<IpAddr> = list
            .iter()
            .flat_map(|(_, ep)| ep.value.nets().map(|n| n.addr()).collect::<Vec<_>>())
            .collect();
        ips.extend(ds.tunnel_addrs_of(host).await?);
        let mut plan: TxnPlan = ds.plan_release(&ips).await?;
        release_affinities(ds, host, &mut plan).await?;
        for prefix in host_prefixes(host) {
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
    .await?;
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

/// Every tree that holds `host`'s records: Felix's, BGP's, Felix's status reports and the
/// IPAM affinities.
fn host_prefixes(host: &str) -> [String; 4] {
    [
        Key::host_dir(host),
        Key::bgp_host_dir(host),
        format!("{FELIX_V1}host/{host}/"),
        format!("{IPAM_V2}host/{host}/"),
    ]
}

/// Adds to `plan` (which may already rewrite some blocks, releasing addresses) the release
/// of every block affine to `host`: deleted when no address stays allocated, else kept
/// without affinity. A block is written once, so the transaction stays valid on etcd.
async fn release_affinities(
    ds: &Datastore,
    host: &str,
    plan: &mut TxnPlan,
) -> Result<(), calico_backends::DatastoreError> {
    let affinity = format!("host:{host}");
    for (key, _) in ds.list(&format!("{IPAM_V2}host/{host}/")).await? {
        let Key::IpamAffinity { cidr, .. } = key else {
            continue;
        };
        let block_key = Key::IpamBlock { cidr };
        let key_text = block_key.to_string();
        // The block as this plan leaves it: rewritten by the release, or as stored.
        let planned = plan
            .ops
            .iter()
            .position(|op| matches!(op, TxnOp::Put { key, .. } if *key == key_text));
        let block = match planned {
            Some(i) => match &plan.ops[i] {
                TxnOp::Put { value, .. } => match decode(&block_key, value)? {
                    Value::Block(block) => block,
                    _ => continue,
                },
                TxnOp::Delete { .. } => continue,
            },
            None => match ds.get(&block_key).await? {
                Some(Versioned {
                    value: Value::Block(block),
                    revision,
                }) => {
                    plan.require_revision(&block_key, revision);
                    block
                }
                _ => continue,
            },
        };
        if block.affinity.as_deref() != Some(affinity.as_str()) {
            continue;
        }
        if let Some(i) = planned {
            plan.ops.remove(i);
        }
        if block.allocations.iter().all(Option::is_none) {
            plan.delete(&block_key);
        } else {
            plan.put(
                &block_key,
                &Value::Block(AllocationBlock {
                    affinity: None,
                    ..block
                }),
            );
        }
    }
    Ok(())
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
    status_text(ctl, a.json()?).await
}

/// The interfaces calico-node last reported waiting for (endpoints whose veth does not exist
/// yet or any more), each with the workload of its endpoint on this host when one names it.
/// From the agent's status record, so it is as fresh as the agent's last report (it
/// rewrites the record whenever the list changes).
async fn waiting_interfaces(ctl: &Ctl) -> Result<Vec<(String, Option<EndpointId>)>, String> {
    let key = format!("{FELIX_V1}host/{}/status", ctl.hostname);
    let record = ctl
        .store
        .get(&key)
        .await
        .map_err(|e| format!("reading {key}: {e}"))?;
    let Some(record) = record else {
        return Ok(Vec::new());
    };
    let ifaces: Vec<String> = serde_json::from_slice::<serde_json::Value>(&record.value)
        .ok()
        .and_then(|v| serde_json::from_value(v.get("waiting_interfaces")?.clone()).ok())
        .unwrap_or_default();
    if ifaces.is_empty() {
        return Ok(Vec::new());
    }
    let filter = EndpointFilter {
        host: Some(ctl.hostname.clone()),
        ..EndpointFilter::default()
    };
    let endpoints = Datastore::new(ctl.store.clone())
        .list_endpoints_lenient(&filter)
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    Ok(ifaces
        .into_iter()
        .map(|iface| {
            let id = endpoints
                .iter()
                .find(|(_, ep)| ep.value.name == iface)
                .map(|(id, _)| id.clone());
            (iface, id)
        })
        .collect())
}

/// `calicoctl status` (reference 2.3): whether the agent runs, its version, then BIRD's BGP
/// sessions in one table per family ("IPv4 BGP status", "IPv6 BGP status") as the
/// original printed them from BIRD and BIRD6.
pub(crate) async fn status_text(ctl: &Ctl, json: bool) -> Result<String, CtlError> {
    let st = ctl.node.status().await.map_err(|e| CtlError::Node {
        action: format!("reading calico-node status on {}", ctl.hostname),
        reason: format!("{e:#}"),
    })?;
    let version = ctl.node.version().await;
    if json {
        let peers: Vec<_> = st
            .bgp_peers
            .iter()
            .map(|p| {
                json!({"protocol": p.protocol, "peer_address": p.peer, "peer_type": p.peer_type,
                       "state": p.state, "since": p.since, "info": p.info})
            })
            .collect();
        let waiting = match waiting_interfaces(ctl).await {
            Ok(rows) => json!(rows
                .iter()
                .map(|(iface, id)| json!({"interface": iface, "workload": id.as_ref().map(|i| &i.workload),
                                          "endpoint": id.as_ref().map(|i| &i.endpoint)}))
                .collect::<Vec<_>>()),
            Err(e) => json!({ "error": e }),
        };
        return Ok(output::json(&json!({
            "running": st.running, "detail": st.detail, "version": version, "bgp_peers": peers,
            "waiting_interfaces": waiting,
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
    if let Some(v) = version {
        out.push_str(&format!(
            "Running calico-node version {}\n",
            v.strip_prefix("calico-node ").unwrap_or(&v)
        ));
    }
    for (family, v6) in [("IPv4", false), ("IPv6", true)] {
        out.push_str(&format!("\n{family} BGP status\n"));
        let rows: Vec<_> = st
            .bgp_peers
            .iter()
            .filter(|p| p.peer.contains(':') == v6)
            .collect();
        if rows.is_empty() {
            out.push_str(&format!("No {family} peers found.\n"));
            continue;
        }
        let mut t = Table::new(&["Peer address", "Peer type", "State", "Since", "Info"]);
        for p in rows {
            t.row(vec![
                p.peer.clone(),
                p.peer_type.clone(),
                p.state.clone(),
                p.since.clone(),
                p.info.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    match waiting_interfaces(ctl).await {
        Ok(rows) if rows.is_empty() => {}
        Ok(rows) => {
            out.push_str("\nWaiting interfaces (endpoints programmed once they appear)\n");
            let mut t = Table::new(&["Interface", "Workload", "Endpoint"]);
            for (iface, id) in rows {
                let (workload, endpoint) =
                    id.map_or((String::new(), String::new()), |i| (i.workload, i.endpoint));
                t.row(vec![iface, workload, endpoint]);
            }
            out.push_str(&t.render());
        }
        Err(e) => out.push_str(&format!("\nWaiting interfaces unknown ({e})\n")),
    }
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
