//! `calicoctl container` (reference 2.5): add/remove a workload's endpoint, its addresses and
//! its profiles.
//!
//! `container add` reserves the address and writes the endpoint in one transaction. The
//! workload-side MAC is only known after plumbing, so it plumbs first and commits second; a
//! failed commit removes the veth again, a conflicting one re-plans and retries (up to 100
//! times). Whatever fails, nothing is left behind: no reservation, no endpoint, no veth.

use std::net::IpAddr;

use calico_backends::{
    retry_on_conflict, AssignRequest, Datastore, DatastoreError, EndpointFilter, TxnPlan,
    MAX_RETRIES,
};
use calico_core::codec::Value;
use calico_core::keys::{IpVersion, Key};
use calico_core::model::{EndpointId, EndpointState, WorkloadEndpoint};
use calico_dataplane::VethSpec;
use ipnet::IpNet;

use super::args::parse_as;
use super::endpoint::{detailed, profile_cmd};
use super::ids::new_endpoint_id;
use super::{no_more, Args, Ctl, CtlError, Workload};

pub(crate) async fn run(
    ctl: &Ctl,
    ds: &Datastore,
    a: &Args,
    rest: &[&str],
) -> Result<String, CtlError> {
    match rest {
        ["add", container, ip, more @ ..] => {
            no_more(more)?;
            a.allow(&["interface"])?;
            add(
                ctl,
                ds,
                container,
                ip,
                a.value("interface").unwrap_or("eth1"),
            )
            .await
        }
        ["remove", container, more @ ..] => {
            no_more(more)?;
            a.allow(&[])?;
            remove(ctl, ds, container).await
        }
        [container, "ip", op @ ("add" | "remove"), ip, more @ ..] => {
            no_more(more)?;
            a.allow(&["interface"])?;
            let iface = a.value("interface").unwrap_or("eth1");
            if *op == "add" {
                ip_add(ctl, ds, container, parse_request(ip)?, iface).await
            } else {
                let ip: IpAddr = parse_as("IP address", ip)?;
                ip_remove(ctl, ds, container, ip, iface).await
            }
        }
        [container, "endpoint", "show", more @ ..] => {
            no_more(more)?;
            a.allow(&[])?;
            let (_, list) = endpoints_of(ctl, ds, container).await?;
            Ok(detailed(&list, a.json()?))
        }
        [container, "endpoint-id", "show", more @ ..] => {
            no_more(more)?;
            a.allow(&[])?;
            endpoint_ids(ctl, ds, container, a.json()?).await
        }
        [container, "label", op @ ("add" | "remove"), label, more @ ..] => {
            no_more(more)?;
            a.allow(&[])?;
            let (id, _) = the_endpoint(ctl, ds, container).await?;
            label_cmd(ds, &id, op, label).await
        }
        [_, "label", ..] => Err(CtlError::MissingArgument {
            what: "label add KEY=VALUE or label remove KEY",
        }),
        [container, "profile", more @ ..] => {
            a.allow(&[])?;
            let (id, _) = the_endpoint(ctl, ds, container).await?;
            profile_cmd(ds, a, &id, more).await
        }
        ["add"] | ["add", _] => Err(CtlError::MissingArgument {
            what: "<CONTAINER> <IP> for container add",
        }),
        [] => Err(CtlError::MissingArgument {
            what: "container subcommand",
        }),
        [_, other, ..] | [other] => Err(CtlError::UnexpectedArgument {
            arg: (*other).to_string(),
        }),
    }
}

/// `container <C> label add KEY=VALUE` / `label remove KEY`: edits the endpoint's labels
/// (a convenience the original lacked: it had only resource files for labels).
async fn label_cmd(
    ds: &Datastore,
    id: &calico_core::model::EndpointId,
    op: &str,
    label: &str,
) -> Result<String, CtlError> {
    use calico_core::model::{validate_label_key, validate_label_value};
    let (key, value) = match (op, label.split_once('=')) {
        ("add", Some((k, v))) => (k, Some(v)),
        ("add", None) => {
            return Err(CtlError::BadArgument {
                what: "label",
                value: label.to_string(),
                reason: "expected KEY=VALUE".into(),
            })
        }
        _ => (label, None),
    };
    validate_label_key(key)?;
    if let Some(v) = value {
        validate_label_value(v)?;
    }
    // Set by the (retried) update; the last attempt's answer is the one committed.
    let missing = std::cell::Cell::new(false);
    ds.update_endpoint(id, |ep| {
        match value {
            Some(v) => {
                ep.labels.insert(key.to_string(), v.to_string());
            }
            None => {
                missing.set(ep.labels.remove(key).is_none());
            }
        }
        Ok(())
    })
    .await?;
    Ok(match value {
        Some(v) => format!("Label {key}={v} set on endpoint {}\n", id.endpoint),
        None if missing.get() => format!("Endpoint {} has no label {key}\n", id.endpoint),
        None => format!("Label {key} removed from endpoint {}\n", id.endpoint),
    })
}

/// `container <C> endpoint-id show` (the original's CC48 form): the bare endpoint id, one
/// per line, for scripts.
async fn endpoint_ids(
    ctl: &Ctl,
    ds: &Datastore,
    container: &str,
    json: bool,
) -> Result<String, CtlError> {
    let (_, list) = endpoints_of(ctl, ds, container).await?;
    if list.is_empty() {
        return Err(CtlError::NoEndpoint {
            container: container.to_string(),
        });
    }
    let ids: Vec<&str> = list.iter().map(|(id, _)| id.endpoint.as_str()).collect();
    if json {
        return Ok(super::output::json(&ids));
    }
    Ok(ids.iter().map(|id| format!("{id}\n")).collect())
}

async fn resolve(ctl: &Ctl, container: &str) -> Result<Workload, CtlError> {
    let workload =
        ctl.resolver
            .lookup(container)
            .await
            .map_err(|detail| CtlError::UnresolvedContainer {
                name: container.to_string(),
                detail,
            })?;
    calico_core::names::validate_name("orchestrator id", &workload.orchestrator)?;
    calico_core::names::validate_name("workload id", &workload.workload_id)?;
    Ok(workload)
}

type EndpointList = Vec<(EndpointId, calico_backends::Versioned<WorkloadEndpoint>)>;

/// The container's workload and its endpoints on this host.
async fn endpoints_of(
    ctl: &Ctl,
    ds: &Datastore,
    container: &str,
) -> Result<(Workload, EndpointList), CtlError> {
    let workload = resolve(ctl, container).await?;
    let list = ds.list_endpoints(&workload_filter(ctl, &workload)).await?;
    Ok((workload, list))
}

/// Every endpoint of `workload` on this host.
fn workload_filter(ctl: &Ctl, workload: &Workload) -> EndpointFilter {
    EndpointFilter {
        host: Some(ctl.hostname.clone()),
        orchestrator: Some(workload.orchestrator.clone()),
        workload: Some(workload.workload_id.clone()),
        endpoint: None,
    }
}

/// The container's single endpoint (the original assumed one per container).
async fn the_endpoint(
    ctl: &Ctl,
    ds: &Datastore,
    container: &str,
) -> Result<(EndpointId, Workload), CtlError> {
    let (workload, mut list) = endpoints_of(ctl, ds, container).await?;
    match list.len() {
        0 => Err(CtlError::NoEndpoint {
            container: container.to_string(),
        }),
        1 => Ok((list.remove(0).0, workload)),
        count => Err(CtlError::MultipleEndpoints {
            what: format!("container {container}"),
            count,
        }),
    }
}

fn parse_request(ip: &str) -> Result<AssignRequest, CtlError> {
    Ok(match ip {
        "ipv4" => AssignRequest::Auto(IpVersion::V4),
        "ipv6" => AssignRequest::Auto(IpVersion::V6),
        s if s.contains('/') => AssignRequest::Pool(parse_as::<IpNet>("pool CIDR", s)?),
        s => AssignRequest::Ip(parse_as::<IpAddr>("IP address", s)?),
    })
}

async fn add(
    ctl: &Ctl,
    ds: &Datastore,
    container: &str,
    ip: &str,
    iface: &str,
) -> Result<String, CtlError> {
    calico_core::names::validate_iface(iface)?;
    let request = parse_request(ip)?;
    let (workload, existing) = endpoints_of(ctl, ds, container).await?;
    if !existing.is_empty() {
        return Err(CtlError::AlreadyHasEndpoint {
            container: container.to_string(),
        });
    }
    let exists = ctl
        .plumbing
        .namespace_exists(&workload.netns)
        .await
        .map_err(|e| dataplane("checking the workload namespace", e))?;
    if !exists {
        return Err(CtlError::UnknownContainer {
            name: container.to_string(),
        });
    }
    let version = match request {
        AssignRequest::Ip(ip) => IpVersion::of_addr(&ip),
        AssignRequest::Auto(v) => v,
        AssignRequest::Pool(net) => IpVersion::of(&net),
    };
    let (gw4, gw6) = ds.host_ips(&ctl.hostname).await?;
    let missing = |v| CtlError::NoHostIp {
        host: ctl.hostname.clone(),
        version: v,
    };
    match version {
        IpVersion::V4 if gw4.is_none() => return Err(missing(4)),
        IpVersion::V6 if gw6.is_none() => return Err(missing(6)),
        _ => {}
    }
    let endpoint_id = new_endpoint_id();
    let id = EndpointId {
        host: ctl.hostname.clone(),
        orchestrator: workload.orchestrator.clone(),
        workload: workload.workload_id.clone(),
        endpoint: endpoint_id.clone(),
    };
    let host_iface = format!("cali{}", &endpoint_id[..11]);
    for _ in 0..MAX_RETRIES {
        let (ip, mut plan) = ds.plan_assign(request, &endpoint_id, &ctl.hostname).await?;
        let net = IpNet::from(ip);
        let spec = VethSpec {
            netns: workload.netns.clone(),
            host_iface: host_iface.clone(),
            temp_iface: format!("tmp{}", &endpoint_id[..11]),
            workload_iface: iface.to_string(),
            addrs: vec![net],
            gateway_v4: if version == IpVersion::V4 { gw4 } else { None },
            gateway_v6: if version == IpVersion::V6 { gw6 } else { None },
        };
        let mac = ctl
            .plumbing
            .add_veth(&spec)
            .await
            .map_err(|e| dataplane(&format!("creating veth {host_iface}"), e))?;
        let endpoint = WorkloadEndpoint {
            state: EndpointState::Active,
            name: host_iface.clone(),
            mac,
            profile_ids: Vec::new(),
            ipv4_nets: match net {
                IpNet::V4(n) => vec![n],
                IpNet::V6(_) => vec![],
            },
            ipv6_nets: match net {
                IpNet::V6(n) => vec![n],
                IpNet::V4(_) => vec![],
            },
            labels: Default::default(),
            ipv4_gateway: gw4,
            ipv6_gateway: gw6,
        };
        let committed = match ds.plan_create_endpoint(&id, &endpoint) {
            Ok(create) => {
                plan.extend(create);
                ds.commit(plan).await.map_err(CtlError::from)
            }
            Err(e) => Err(e.into()),
        };
        match committed {
            Ok(_) => {
                return Ok(format!(
                "IP {ip} added to {container}\nEndpoint {endpoint_id} on interface {host_iface}\n"
            ))
            }
            Err(e) => {
                let conflict = matches!(&e, CtlError::Datastore(d) if d.is_conflict());
                if let Err(undo) = ctl.plumbing.remove_veth(&host_iface).await {
                    return Err(CtlError::RollbackFailed {
                        action: Box::new(e),
                        undo: format!("removing veth {host_iface}: {undo}"),
                    });
                }
                if !conflict {
                    return Err(e);
                }
            }
        }
    }
    Err(CtlError::Datastore(DatastoreError::TooManyConflicts {
        what: format!("adding container {container}"),
        attempts: MAX_RETRIES,
    }))
}

fn dataplane(action: &str, e: calico_dataplane::DataplaneError) -> CtlError {
    CtlError::Dataplane {
        action: action.to_string(),
        reason: e.to_string(),
    }
}

async fn remove(ctl: &Ctl, ds: &Datastore, container: &str) -> Result<String, CtlError> {
    let (workload, list) = endpoints_of(ctl, ds, container).await?;
    if list.is_empty() {
        // As the original: a container Calico has no data for is reported, not an error;
        // it is out of Calico either way.
        return Ok(format!("Failed to find Calico data for {container}\n"));
    }
    retry_on_conflict(&format!("removing container {container}"), || async {
        let list = ds.list_endpoints(&workload_filter(ctl, &workload)).await?;
        let ips: Vec<IpAddr> = list
            .iter()
            .flat_map(|(_, ep)| ep.value.nets().map(|n| n.addr()).collect::<Vec<_>>())
            .collect();
        let mut plan: TxnPlan = ds.plan_release(&ips).await?;
        for (id, ep) in &list {
            let key = Key::Endpoint(id.clone());
            plan.require_revision(&key, ep.revision);
            plan.delete(&key);
        }
        ds.commit(plan).await?;
        Ok(())
    })
    .await?;
    let mut problems = Vec::new();
    for (_, ep) in &list {
        if let Err(e) = ctl.plumbing.remove_veth(&ep.value.name).await {
            problems.push(format!("removing veth {}: {e}", ep.value.name));
        }
    }
    if !problems.is_empty() {
        return Err(CtlError::Dataplane {
            action: format!("removing container {container} (its endpoints are deleted)"),
            reason: problems.join("; "),
        });
    }
    Ok(format!("Removed Calico from {container}\n"))
}

/// Adds `ip` to the endpoint's nets in a plan (compare on the endpoint's revision).
/// Releases `ip` in IPAM and takes it off the endpoint, as one plan (`ip remove`, and the
/// undo of a failed `ip add`).
async fn plan_unassign(ds: &Datastore, id: &EndpointId, ip: IpAddr) -> Result<TxnPlan, CtlError> {
    let mut plan = ds.plan_release(&[ip]).await?;
    plan.extend(
        plan_endpoint_nets(ds, id, |ep| {
            if !has_net(ep, ip) {
                return Err(CtlError::AddressNotOnEndpoint {
                    address: ip.to_string(),
                    endpoint: id.endpoint.clone(),
                });
            }
            drop_net(ep, ip);
            Ok(())
        })
        .await?,
    );
    Ok(plan)
}

async fn plan_endpoint_nets(
    ds: &Datastore,
    id: &EndpointId,
    change: impl Fn(&mut WorkloadEndpoint) -> Result<(), CtlError>,
) -> Result<TxnPlan, CtlError> {
    let current = ds.get_endpoint(id).await?.ok_or_else(|| {
        CtlError::Datastore(DatastoreError::EndpointNotFound {
            endpoint: id.to_string(),
        })
    })?;
    let mut ep = current.value;
    change(&mut ep)?;
    let key = Key::Endpoint(id.clone());
    let mut plan = TxnPlan::default();
    plan.require_revision(&key, current.revision);
    plan.put(&key, &Value::Endpoint(ep));
    Ok(plan)
}

/// The endpoint's gateway of `ip`'s family when it has no address of that family yet. The
/// original's `ip add` added no route (a TODO in its code), which left a workload given a
/// second family that way unable to answer on it; we add that family's default route, as
/// `container add` does for the first.
fn first_of_family(ep: &WorkloadEndpoint, ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(_) if ep.ipv4_nets.is_empty() => ep.ipv4_gateway.map(IpAddr::V4),
        IpAddr::V6(_) if ep.ipv6_nets.is_empty() => ep.ipv6_gateway.map(IpAddr::V6),
        _ => None,
    }
}

fn has_net(ep: &WorkloadEndpoint, ip: IpAddr) -> bool {
    ep.nets().any(|n| n == IpNet::from(ip))
}

fn push_net(ep: &mut WorkloadEndpoint, ip: IpAddr) {
    match IpNet::from(ip) {
        IpNet::V4(n) => ep.ipv4_nets.push(n),
        IpNet::V6(n) => ep.ipv6_nets.push(n),
    }
}

fn drop_net(ep: &mut WorkloadEndpoint, ip: IpAddr) {
    let net = IpNet::from(ip);
    ep.ipv4_nets.retain(|n| IpNet::V4(*n) != net);
    ep.ipv6_nets.retain(|n| IpNet::V6(*n) != net);
}

/// Retries a whole plan-and-commit on conflict, keeping non-datastore errors as they are.
async fn commit_retrying<F, Fut>(ds: &Datastore, what: &str, mut plan: F) -> Result<(), CtlError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<TxnPlan, CtlError>>,
{
    for _ in 0..MAX_RETRIES {
        let p = plan().await?;
        match ds.commit(p).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CtlError::Datastore(DatastoreError::TooManyConflicts {
        what: what.to_string(),
        attempts: MAX_RETRIES,
    }))
}

/// `container <C> ip add <IP>`: an explicit address, or `ipv4` / `ipv6` / a pool CIDR to
/// auto-assign one as `container add` does. The address is reserved and put on the endpoint
/// in one transaction; when the kernel refuses it, both are undone.
async fn ip_add(
    ctl: &Ctl,
    ds: &Datastore,
    container: &str,
    request: AssignRequest,
    iface: &str,
) -> Result<String, CtlError> {
    calico_core::names::validate_iface(iface)?;
    let (id, workload) = the_endpoint(ctl, ds, container).await?;
    let mut assigned = None;
    // The gateway of the address's family when the endpoint had no address of it yet: the
    // workload then has no default route of that family either (see `first_of_family`).
    let new_family_gateway = std::cell::Cell::new(None);
    for _ in 0..MAX_RETRIES {
        let (ip, mut plan) = ds.plan_assign(request, &id.endpoint, &ctl.hostname).await?;
        plan.extend(
            plan_endpoint_nets(ds, &id, |ep| {
                new_family_gateway.set(first_of_family(ep, ip));
                push_net(ep, ip);
                Ok(())
            })
            .await?,
        );
        match ds.commit(plan).await {
            Ok(_) => {
                assigned = Some(ip);
                break;
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let ip = assigned.ok_or_else(|| {
        CtlError::Datastore(DatastoreError::TooManyConflicts {
            what: format!("adding an address to {container}"),
            attempts: MAX_RETRIES,
        })
    })?;
    let mut plumbed = ctl
        .plumbing
        .add_addr(&workload.netns, iface, IpNet::from(ip))
        .await
        .map_err(|e| dataplane(&format!("adding {ip} to {iface} in {container}"), e));
    if let (Ok(()), Some(gw)) = (&plumbed, new_family_gateway.get()) {
        if let Err(e) = ctl
            .plumbing
            .add_gateway_routes(&workload.netns, iface, gw)
            .await
        {
            let _ = ctl
                .plumbing
                .remove_addr(&workload.netns, iface, IpNet::from(ip))
                .await;
            plumbed = Err(dataplane(
                &format!("adding the default route via {gw} to {iface} in {container}"),
                e,
            ));
        }
    }
    if let Err(err) = plumbed {
        let undo = commit_retrying(ds, &format!("undoing {ip} on {container}"), || {
            plan_unassign(ds, &id, ip)
        })
        .await;
        return Err(match undo {
            Ok(()) => err,
            Err(u) => CtlError::RollbackFailed {
                action: Box::new(err),
                undo: u.to_string(),
            },
        });
    }
    Ok(format!("IP {ip} added to {container}\n"))
}

async fn ip_remove(
    ctl: &Ctl,
    ds: &Datastore,
    container: &str,
    ip: IpAddr,
    iface: &str,
) -> Result<String, CtlError> {
    let (id, workload) = the_endpoint(ctl, ds, container).await?;
    commit_retrying(ds, &format!("removing {ip} from {container}"), || {
        plan_unassign(ds, &id, ip)
    })
    .await?;
    ctl.plumbing
        .remove_addr(&workload.netns, iface, IpNet::from(ip))
        .await
        .map_err(|e| {
            dataplane(
                &format!("removing {ip} from {iface} in {container} (released in the datastore)"),
                e,
            )
        })?;
    Ok(format!("IP {ip} removed from {container}\n"))
}
