//! calicoctl 1.x resource commands over the v1 layout (reference
//! `calico-v1-policy-and-routing.md` 1.1, 1.4):
//!
//! - `create | apply | replace | delete -f FILE` (`-f -`: standard input), every document
//!   parsed and validated first, then written in one transaction: all or nothing;
//! - `delete KIND NAME [--node=NODE] [--orchestrator=O --workload=W]`;
//! - `get KIND [NAME] [--node=NODE] [-o yaml|json]`.
//!
//! - [`doc`]: files and documents; [`kinds`]: the kinds and where they are stored; [`api`]:
//!   rules and fields as users write them; [`get`]: reading resources back.

mod api;
mod doc;
mod get;
mod kinds;

use calico_backends::{Datastore, TxnPlan};
use calico_core::keys::Key;

use super::{Args, CtlError};
use kinds::{Resource, Writes};

/// What a file command does to each resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Apply,
    Replace,
    Delete,
}

impl Verb {
    pub fn parse(word: &str) -> Option<Verb> {
        Some(match word {
            "create" => Verb::Create,
            "apply" => Verb::Apply,
            "replace" => Verb::Replace,
            "delete" => Verb::Delete,
            _ => return None,
        })
    }

    fn past(self) -> &'static str {
        match self {
            Verb::Create => "created",
            Verb::Apply => "applied",
            Verb::Replace => "replaced",
            Verb::Delete => "deleted",
        }
    }
}

/// The canonical kind named by a command-line word (case-insensitive, plural and short
/// aliases as calicoctl 1.x took them).
pub fn kind_of(word: &str) -> Result<&'static str, CtlError> {
    Ok(match word.to_ascii_lowercase().as_str() {
        "policy" | "policies" | "pol" | "pols" => "policy",
        "profile" | "profiles" | "pro" | "pros" => "profile",
        "workloadendpoint" | "workloadendpoints" | "wep" | "weps" => "workloadEndpoint",
        "hostendpoint" | "hostendpoints" | "hep" | "heps" => "hostEndpoint",
        "ippool" | "ippools" | "ipp" | "ipps" | "pool" | "pools" => "ipPool",
        "bgppeer" | "bgppeers" | "bgpp" | "bgpps" | "bp" | "bps" => "bgpPeer",
        "node" | "nodes" | "no" | "nos" => "node",
        _ => {
            return Err(CtlError::BadArgument {
                what: "resource kind",
                value: word.to_string(),
                reason: format!("expected one of {}", kinds::KINDS.join(", ")),
            })
        }
    })
}

/// The file of `-f FILE` / `--filename=FILE` and the positionals left.
fn filename<'a>(a: &'a Args, rest: &[&'a str]) -> (Option<&'a str>, Vec<&'a str>) {
    if let Some(f) = a.value("filename") {
        return (Some(f), rest.to_vec());
    }
    match rest.iter().position(|w| *w == "-f") {
        Some(i) => {
            let mut left = rest.to_vec();
            let file = left.get(i + 1).copied();
            left.drain(i..(i + 2).min(left.len()));
            (file, left)
        }
        None => (None, rest.to_vec()),
    }
}

fn read_input(file: &str, stdin: &str) -> Result<String, CtlError> {
    if file == "-" {
        return Ok(stdin.to_string());
    }
    std::fs::read_to_string(file).map_err(|e| CtlError::BadArgument {
        what: "file",
        value: file.to_string(),
        reason: e.to_string(),
    })
}

/// `create|apply|replace|delete -f FILE`, or `delete KIND NAME`.
///
/// # Errors
/// Bad arguments, a file that does not parse or validate, or a resource that exists
/// (create) or does not (replace, delete); nothing is written then.
pub async fn run_verb(
    verb: Verb,
    ds: &Datastore,
    a: &Args,
    rest: &[&str],
    stdin: &str,
) -> Result<String, CtlError> {
    a.allow(&[
        "filename",
        "node",
        "orchestrator",
        "workload",
        "skip-exists",
    ])?;
    let (file, left) = filename(a, rest);
    let resources = match (file, left.as_slice(), verb) {
        (Some(file), [], _) => doc::parse(&read_input(file, stdin)?)?,
        (None, [kind, name], Verb::Delete) => {
            return delete_named(ds, a, kind_of(kind)?, name).await;
        }
        (None, [], _) | (None, [_], Verb::Delete) => {
            return Err(CtlError::MissingArgument {
                what: "-f FILE (or, for delete, KIND NAME)",
            })
        }
        (_, [extra, ..], _) => {
            return Err(CtlError::UnexpectedArgument {
                arg: extra.to_string(),
            })
        }
    };
    let mut plan = TxnPlan::default();
    let mut done = 0;
    for r in &resources {
        // Validated when parsed; writes() cannot fail here, but say so if it does.
        let writes = r.writes().map_err(|reason| CtlError::BadResource {
            doc: 0,
            what: r.kind().to_string(),
            reason,
        })?;
        let current = ds.get(&writes.primary).await?;
        match (verb, &current) {
            (Verb::Create, Some(_)) if a.flag("skip-exists") => continue,
            (Verb::Create, Some(_)) => return Err(CtlError::ResourceExists { what: r.describe() }),
            (Verb::Replace | Verb::Delete, None) => {
                return Err(CtlError::ResourceMissing { what: r.describe() })
            }
            _ => {}
        }
        plan.require_revision(&writes.primary, current.map_or(0, |v| v.revision));
        if verb == Verb::Delete {
            for key in writes.owned() {
                plan.delete(key);
            }
        } else {
            add_writes(&mut plan, &writes);
        }
        done += 1;
    }
    ds.commit(plan).await?;
    let mut out = success(verb, &resources, done);
    if resources.iter().any(|r| r.pool().is_some()) {
        // Hosts' tunnel addresses follow the pools, as after `pool add` and `pool remove`.
        out.push_str(&super::pool::sync_tunnel_addrs(ds).await?);
    }
    Ok(out)
}

fn add_writes(plan: &mut TxnPlan, writes: &Writes) {
    for (key, value) in &writes.puts {
        plan.put(key, value);
    }
    for key in &writes.removes {
        plan.delete(key);
    }
}

fn success(verb: Verb, resources: &[Resource], done: usize) -> String {
    let first = resources.first().map(Resource::kind);
    if resources.iter().all(|r| Some(r.kind()) == first) {
        format!(
            "Successfully {} {done} '{}' resource(s)\n",
            verb.past(),
            first.unwrap_or_default()
        )
    } else {
        format!("Successfully {} {done} resource(s)\n", verb.past())
    }
}

/// The keys of a resource named on the command line, and how to describe it.
fn named_keys(a: &Args, kind: &str, name: &str) -> Result<(Key, Vec<Key>, String), CtlError> {
    let need = |what: &'static str| {
        a.value(what)
            .map(str::to_string)
            .ok_or(CtlError::MissingArgument {
                what: match what {
                    "node" => "--node (insufficient identifiers, missing 'node')",
                    "orchestrator" => {
                        "--orchestrator (insufficient identifiers, missing 'orchestrator')"
                    }
                    _ => "--workload (insufficient identifiers, missing 'workload')",
                },
            })
    };
    let bad = |what: &'static str, reason: String| CtlError::BadArgument {
        what,
        value: name.to_string(),
        reason,
    };
    let one = |key: Key, what: String| (key.clone(), vec![key], what);
    Ok(match kind {
        "policy" => one(
            Key::Policy {
                name: name.to_string(),
            },
            format!("Policy(name={name})"),
        ),
        "profile" => {
            let p = name.to_string();
            (
                Key::ProfileRules { profile: p.clone() },
                vec![
                    Key::ProfileTags { profile: p.clone() },
                    Key::ProfileRules { profile: p.clone() },
                    Key::ProfileLabels { profile: p },
                ],
                format!("Profile(name={name})"),
            )
        }
        "workloadEndpoint" => {
            let id = calico_core::model::EndpointId {
                host: need("node")?,
                orchestrator: need("orchestrator")?,
                workload: need("workload")?,
                endpoint: name.to_string(),
            };
            let what = format!("WorkloadEndpoint({id})");
            one(Key::Endpoint(id), what)
        }
        "hostEndpoint" => {
            let id = calico_core::model::HostEndpointId {
                host: need("node")?,
                endpoint: name.to_string(),
            };
            let what = format!("HostEndpoint(node={}, name={name})", id.host);
            one(Key::HostEndpoint(id), what)
        }
        "ipPool" => {
            let cidr: ipnet::IpNet = name
                .parse()
                .map_err(|_| bad("pool CIDR", "expected a CIDR".into()))?;
            one(Key::Pool { cidr }, format!("IPPool(cidr={name})"))
        }
        "bgpPeer" => {
            let ip = name
                .parse()
                .map_err(|_| bad("peer IP", "expected an IP address".into()))?;
            match a.value("node") {
                Some(node) => one(
                    Key::HostPeer {
                        host: node.to_string(),
                        ip,
                    },
                    format!("BGPPeer(node={node}, peerIP={name})"),
                ),
                None => one(
                    Key::GlobalPeer { ip },
                    format!("BGPPeer(scope=global, peerIP={name})"),
                ),
            }
        }
        _ => {
            let h = name.to_string();
            let v4 = Key::HostIp {
                host: h.clone(),
                version: calico_core::keys::IpVersion::V4,
            };
            let keys = vec![
                v4.clone(),
                Key::HostIp {
                    host: h.clone(),
                    version: calico_core::keys::IpVersion::V6,
                },
                Key::HostNetwork {
                    host: h.clone(),
                    version: calico_core::keys::IpVersion::V4,
                },
                Key::HostNetwork {
                    host: h.clone(),
                    version: calico_core::keys::IpVersion::V6,
                },
                Key::BirdIp { host: h.clone() },
                Key::HostAsNum { host: h },
            ];
            (v4, keys, format!("Node(name={name})"))
        }
    })
}

async fn delete_named(
    ds: &Datastore,
    a: &Args,
    kind: &str,
    name: &str,
) -> Result<String, CtlError> {
    let (primary, keys, what) = named_keys(a, kind, name)?;
    // A name that is no valid key segment names nothing stored.
    if Key::parse(&primary.to_string()).ok().as_ref() != Some(&primary) {
        return Err(CtlError::ResourceMissing { what });
    }
    let Some(current) = ds.get(&primary).await? else {
        return Err(CtlError::ResourceMissing { what });
    };
    let mut plan = TxnPlan::default();
    plan.require_revision(&primary, current.revision);
    for key in keys {
        plan.delete(key);
    }
    ds.commit(plan).await?;
    Ok(format!("Successfully deleted 1 '{kind}' resource(s)\n"))
}

/// `get KIND [NAME]`.
///
/// # Errors
/// Bad arguments or a datastore failure.
pub async fn run_get(ds: &Datastore, a: &Args, rest: &[&str]) -> Result<String, CtlError> {
    a.allow(&["node", "orchestrator", "workload"])?;
    let (kind, name) = match rest {
        [kind] => (kind_of(kind)?, None),
        [kind, name] => (kind_of(kind)?, Some(*name)),
        [] => {
            return Err(CtlError::MissingArgument {
                what: "KIND to get",
            })
        }
        [_, _, extra, ..] => {
            return Err(CtlError::UnexpectedArgument {
                arg: extra.to_string(),
            })
        }
    };
    let found = get::list(ds, a, kind, name).await?;
    let default_as = if kind == "node" && a.value("output") == Some("wide") {
        Some(ds.default_as().await?)
    } else {
        None
    };
    get::render(kind, &found, a.value("output"), default_as)
}
