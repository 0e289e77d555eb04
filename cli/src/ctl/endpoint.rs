//! `calicoctl endpoint` (reference 2.6) and the endpoint table and profile-list editing the
//! `container` command shares.

use calico_backends::{
    BrokenRecord, Datastore, DatastoreError, EndpointFilter, ProfileEdit, Versioned,
};
use calico_core::model::{EndpointId, EndpointState, WorkloadEndpoint};
use serde_json::json;

use super::output::{self, Table};
use super::{no_more, Args, CtlError};

pub(crate) async fn run(ds: &Datastore, a: &Args, rest: &[&str]) -> Result<String, CtlError> {
    let filter = EndpointFilter {
        host: a.value("host").map(str::to_string),
        orchestrator: a.value("orchestrator").map(str::to_string),
        workload: a.value("workload").map(str::to_string),
        endpoint: a.value("endpoint").map(str::to_string),
    };
    match rest {
        ["show", more @ ..] => {
            no_more(more)?;
            a.allow(&[
                "host",
                "orchestrator",
                "workload",
                "endpoint",
                "detailed",
                "strict",
            ])?;
            let listing = ds.list_endpoints_lenient(&filter).await?;
            let (list, broken) = super::lenient(a, listing)?;
            show(&list, &broken, a.flag("detailed"), a.json()?)
        }
        [id, "profile", more @ ..] => {
            a.allow(&["host", "orchestrator", "workload"])?;
            calico_core::names::validate_name("endpoint id", id)?;
            let filter = EndpointFilter {
                endpoint: Some((*id).to_string()),
                ..filter
            };
            let mut list = ds.list_endpoints(&filter).await?;
            let found = match list.len() {
                0 => {
                    return Err(CtlError::Datastore(
                        calico_backends::DatastoreError::EndpointNotFound {
                            endpoint: (*id).to_string(),
                        },
                    ))
                }
                1 => list.remove(0),
                count => {
                    return Err(CtlError::MultipleEndpoints {
                        what: format!("endpoint id {id}"),
                        count,
                    })
                }
            };
            profile_cmd(ds, a, &found.0, more).await
        }
        [] => Err(CtlError::MissingArgument {
            what: "endpoint subcommand (show, <ENDPOINT_ID> profile)",
        }),
        [other, ..] => Err(CtlError::UnexpectedArgument {
            arg: (*other).to_string(),
        }),
    }
}

/// `... profile (append|remove|set) [<PROFILES>...]` and `... profile show` on one endpoint.
pub(crate) async fn profile_cmd(
    ds: &Datastore,
    a: &Args,
    id: &EndpointId,
    rest: &[&str],
) -> Result<String, CtlError> {
    let names = |list: &[&str]| list.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    let edit = match rest {
        ["show", more @ ..] => {
            no_more(more)?;
            let ep = ds.get_endpoint(id).await?.ok_or_else(|| {
                CtlError::Datastore(calico_backends::DatastoreError::EndpointNotFound {
                    endpoint: id.to_string(),
                })
            })?;
            if a.json()? {
                return Ok(output::json(&ep.value.profile_ids));
            }
            let mut t = Table::new(&["Name"]);
            for p in &ep.value.profile_ids {
                t.row(vec![p.clone()]);
            }
            return Ok(t.render());
        }
        ["set", list @ ..] => ProfileEdit::Set(names(list)),
        ["append", list @ ..] if !list.is_empty() => ProfileEdit::Append(names(list)),
        ["remove", list @ ..] if !list.is_empty() => ProfileEdit::Remove(names(list)),
        ["append" | "remove"] => {
            return Err(CtlError::MissingArgument {
                what: "profile names",
            })
        }
        [] => {
            return Err(CtlError::MissingArgument {
                what: "profile subcommand (set, append, remove, show)",
            })
        }
        [other, ..] => {
            return Err(CtlError::UnexpectedArgument {
                arg: (*other).to_string(),
            })
        }
    };
    // As the original: appending a profile that is there, or removing one that is not,
    // reports it, changes nothing and succeeds.
    let ep = match ds.edit_endpoint_profiles(id, &edit).await {
        Ok(ep) => ep,
        Err(DatastoreError::ProfileAlreadyInEndpoint { profile, .. }) => {
            return Ok(format!(
                "Profile {profile} is already in endpoint profile list\n"
            ))
        }
        Err(DatastoreError::ProfileNotInEndpoint { profile, .. }) => {
            return Ok(format!(
                "Profile {profile} is not in endpoint profile list\n"
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let verb = match edit {
        ProfileEdit::Set(_) => "set",
        ProfileEdit::Append(_) => "appended",
        ProfileEdit::Remove(_) => "removed",
    };
    Ok(format!(
        "Profiles {verb} for endpoint {}: now [{}]\n",
        id.endpoint,
        ep.profile_ids.join(", ")
    ))
}

fn addresses(ep: &WorkloadEndpoint) -> String {
    ep.nets()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn state(ep: &WorkloadEndpoint) -> &'static str {
    match ep.state {
        EndpointState::Active => "active",
        EndpointState::Inactive => "inactive",
    }
}

/// The JSON object of one endpoint with its id fields.
pub(crate) fn endpoint_json(id: &EndpointId, ep: &WorkloadEndpoint) -> serde_json::Value {
    json!({
        "hostname": id.host,
        "orchestrator_id": id.orchestrator,
        "workload_id": id.workload,
        "endpoint_id": id.endpoint,
        "endpoint": ep,
    })
}

/// The detailed endpoint table (or JSON list).
pub(crate) fn detailed(list: &[(EndpointId, Versioned<WorkloadEndpoint>)], json: bool) -> String {
    if json {
        let items: Vec<_> = list
            .iter()
            .map(|(id, ep)| endpoint_json(id, &ep.value))
            .collect();
        return output::json(&items);
    }
    let mut t = Table::new(&[
        "Hostname",
        "Orchestrator ID",
        "Workload ID",
        "Endpoint ID",
        "Interface",
        "Addresses",
        "MAC",
        "Profiles",
        "State",
    ]);
    for (id, ep) in list {
        let ep = &ep.value;
        t.row(vec![
            id.host.clone(),
            id.orchestrator.clone(),
            id.workload.clone(),
            id.endpoint.clone(),
            ep.name.clone(),
            addresses(ep),
            ep.mac.to_string(),
            ep.profile_ids.join(","),
            state(ep).to_string(),
        ]);
    }
    t.render()
}

fn show(
    list: &[(EndpointId, Versioned<WorkloadEndpoint>)],
    broken: &[BrokenRecord],
    detailed_view: bool,
    json: bool,
) -> Result<String, CtlError> {
    if json {
        let mut items: Vec<serde_json::Value> = list
            .iter()
            .map(|(id, ep)| endpoint_json(id, &ep.value))
            .collect();
        items.extend(output::broken_json(broken));
        return Ok(output::json(&items));
    }
    if detailed_view {
        return Ok(detailed(list, false) + &output::broken_records(broken));
    }
    let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for (id, _) in list {
        *counts
            .entry((id.host.clone(), id.orchestrator.clone()))
            .or_default() += 1;
    }
    let mut t = Table::new(&["Hostname", "Orchestrator ID", "Number of Endpoints"]);
    for ((host, orch), n) in counts {
        t.row(vec![host, orch, n.to_string()]);
    }
    Ok(t.render() + &output::broken_records(broken))
}
