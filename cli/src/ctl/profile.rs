//! `calicoctl profile` (reference 2.7): profiles, their tags and their rules.

use calico_backends::{Datastore, DatastoreError, EndpointFilter};
use calico_core::model::{insert_position, Rule, Rules};
use serde_json::json;

use super::args::parse_as;
use super::output::{self, Table};
use super::rule_syntax::{parse_rule, render_rule};
use super::{no_more, Args, CtlError};

pub(crate) async fn run(
    ds: &Datastore,
    a: &Args,
    rest: &[&str],
    stdin: &str,
) -> Result<String, CtlError> {
    match rest {
        ["add", name, more @ ..] => {
            no_more(more)?;
            a.allow(&[])?;
            // As the original: adding a profile that exists is no error, so scripts can
            // ensure a profile under `set -e`.
            match ds.create_profile(name).await {
                Ok(()) => Ok(format!("Created profile {name}\n")),
                Err(DatastoreError::ProfileExists { .. }) => {
                    Ok(format!("Profile {name} already exists.\n"))
                }
                Err(e) => Err(e.into()),
            }
        }
        ["remove", name, more @ ..] => {
            no_more(more)?;
            a.allow(&["no-check"])?;
            // Removing a profile that is not there leaves the wanted state: the original
            // printed "not found" and exited 0. A profile in use is still refused.
            match ds.remove_profile(name, !a.flag("no-check")).await {
                Ok(()) => Ok(format!("Deleted profile {name}\n")),
                Err(DatastoreError::ProfileNotFound { .. }) => {
                    Ok(format!("Profile {name} not found.\n"))
                }
                Err(e) => Err(e.into()),
            }
        }
        ["show", more @ ..] => {
            no_more(more)?;
            a.allow(&["detailed", "strict"])?;
            show(ds, a, a.flag("detailed"), a.json()?).await
        }
        [name, "tag", more @ ..] => {
            a.allow(&[])?;
            calico_core::names::validate_name("profile", name)?;
            tag(ds, a, name, more).await
        }
        [name, "rule", more @ ..] => {
            a.allow(&["at"])?;
            calico_core::names::validate_name("profile", name)?;
            rule(ds, a, name, more, stdin).await
        }
        [] => Err(CtlError::MissingArgument {
            what: "profile subcommand",
        }),
        [_, other, ..] | [other] => Err(CtlError::UnexpectedArgument {
            arg: (*other).to_string(),
        }),
    }
}

async fn show(ds: &Datastore, a: &Args, detailed: bool, json: bool) -> Result<String, CtlError> {
    let (profiles, mut broken) = super::lenient(a, ds.list_profiles_lenient().await?)?;
    if !detailed {
        if json {
            let mut items: Vec<_> = profiles
                .iter()
                .map(|(n, p)| json!({"name": n, "tags": p.tags, "rules": p.rules}))
                .collect();
            items.extend(output::broken_json(&broken));
            return Ok(output::json(&items));
        }
        let mut t = Table::new(&["Name"]);
        for name in profiles.keys() {
            t.row(vec![name.clone()]);
        }
        return Ok(t.render() + &output::broken_records(&broken));
    }
    let (endpoints, broken_endpoints) = super::lenient(
        a,
        ds.list_endpoints_lenient(&EndpointFilter::default())
            .await?,
    )?;
    broken.extend(broken_endpoints);
    let mut rows = Vec::new();
    for name in profiles.keys() {
        for (id, ep) in &endpoints {
            if ep.value.profile_ids.contains(name) {
                rows.push((name.clone(), id.clone(), ep.value.clone()));
            }
        }
    }
    if json {
        let mut items: Vec<_> = rows
            .iter()
            .map(|(n, id, ep)| {
                json!({"name": n, "hostname": id.host, "orchestrator_id": id.orchestrator,
                       "workload_id": id.workload, "endpoint_id": id.endpoint, "endpoint": ep})
            })
            .collect();
        items.extend(output::broken_json(&broken));
        return Ok(output::json(&items));
    }
    let mut t = Table::new(&[
        "Name",
        "Host",
        "Orchestrator ID",
        "Workload ID",
        "Endpoint ID",
        "Addresses",
        "MAC",
        "State",
    ]);
    for (n, id, ep) in rows {
        t.row(vec![
            n,
            id.host,
            id.orchestrator,
            id.workload,
            id.endpoint,
            ep.nets()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
            ep.mac.to_string(),
            format!("{:?}", ep.state).to_lowercase(),
        ]);
    }
    Ok(t.render() + &output::broken_records(&broken))
}

async fn tag(ds: &Datastore, a: &Args, name: &str, rest: &[&str]) -> Result<String, CtlError> {
    match rest {
        ["show", more @ ..] => {
            no_more(more)?;
            let tags = ds.profile_tags(name).await?;
            if a.json()? {
                return Ok(output::json(&tags));
            }
            Ok(tags.iter().map(|t| format!("{t}\n")).collect())
        }
        ["add", tag, more @ ..] => {
            no_more(more)?;
            calico_core::names::validate_name("tag", tag)?;
            // Tags are a set in the original: adding one that is there changes nothing and
            // succeeds.
            let result = ds
                .update_profile_tags(name, |tags| {
                    if tags.iter().any(|t| t == tag) {
                        return Err(DatastoreError::TagExists {
                            profile: name.to_string(),
                            tag: (*tag).to_string(),
                        });
                    }
                    tags.push((*tag).to_string());
                    Ok(())
                })
                .await;
            match result {
                Ok(_) => Ok(format!("Tag {tag} added to profile {name}\n")),
                Err(DatastoreError::TagExists { .. }) => {
                    Ok(format!("Tag {tag} is already on profile {name}\n"))
                }
                Err(e) => Err(e.into()),
            }
        }
        ["remove", tag, more @ ..] => {
            no_more(more)?;
            ds.update_profile_tags(name, |tags| {
                let before = tags.len();
                tags.retain(|t| t != tag);
                if tags.len() == before {
                    return Err(DatastoreError::TagNotFound {
                        profile: name.to_string(),
                        tag: (*tag).to_string(),
                    });
                }
                Ok(())
            })
            .await?;
            Ok(format!("Tag {tag} removed from profile {name}\n"))
        }
        _ => Err(CtlError::MissingArgument {
            what: "tag subcommand: show | add <TAG> | remove <TAG>",
        }),
    }
}

fn direction(word: &str) -> Result<bool, CtlError> {
    match word {
        "inbound" => Ok(true),
        "outbound" => Ok(false),
        other => Err(CtlError::BadArgument {
            what: "rule direction",
            value: other.to_string(),
            reason: "expected inbound or outbound".into(),
        }),
    }
}

fn list(rules: &mut Rules, inbound: bool) -> &mut Vec<Rule> {
    if inbound {
        &mut rules.inbound_rules
    } else {
        &mut rules.outbound_rules
    }
}

async fn rule(
    ds: &Datastore,
    a: &Args,
    name: &str,
    rest: &[&str],
    stdin: &str,
) -> Result<String, CtlError> {
    let at: Option<i64> = a.value("at").map(|s| parse_as("--at", s)).transpose()?;
    match rest {
        ["show", more @ ..] => {
            no_more(more)?;
            let rules = ds.profile_rules(name).await?;
            if a.json()? {
                return Ok(output::json(&rules));
            }
            let mut out = String::from("Inbound rules:\n");
            for (i, r) in rules.inbound_rules.iter().enumerate() {
                out.push_str(&format!("  {:>2} {}\n", i + 1, render_rule(r)));
            }
            out.push_str("Outbound rules:\n");
            for (i, r) in rules.outbound_rules.iter().enumerate() {
                out.push_str(&format!("  {:>2} {}\n", i + 1, render_rule(r)));
            }
            Ok(out)
        }
        ["json", more @ ..] => {
            no_more(more)?;
            Ok(output::json(&ds.profile_rules(name).await?))
        }
        ["update", more @ ..] => {
            no_more(more)?;
            let mut rules: Rules =
                serde_json::from_str(stdin).map_err(|e| CtlError::BadArgument {
                    what: "rules JSON on stdin",
                    value: stdin.chars().take(80).collect(),
                    reason: e.to_string(),
                })?;
            match &rules.id {
                Some(id) if id != name => {
                    return Err(CtlError::RulesIdMismatch {
                        profile: name.to_string(),
                        id: id.clone(),
                    })
                }
                _ => rules.id = Some(name.to_string()),
            }
            rules.validate()?;
            ds.update_profile_rules(name, |current| {
                *current = rules.clone();
                Ok(())
            })
            .await?;
            Ok(format!("Rules of profile {name} updated\n"))
        }
        ["add", dir, spec @ ..] => {
            let inbound = direction(dir)?;
            let new = parse_rule(spec)?;
            let present = std::cell::Cell::new(false);
            ds.update_profile_rules(name, |rules| {
                let l = list(rules, inbound);
                present.set(l.contains(&new));
                if !present.get() {
                    let idx = match at {
                        Some(position) => insert_position(position, l.len())?,
                        None => l.len(),
                    };
                    l.insert(idx, new.clone());
                }
                Ok(())
            })
            .await?;
            Ok(if present.get() {
                format!("Rule already present in {dir} rules of profile {name}: {}\n", render_rule(&new))
            } else {
                format!("Rule added to {dir} rules of profile {name}: {}\n", render_rule(&new))
            })
        }
        ["remove", dir, spec @ ..] => {
            let inbound = direction(dir)?;
            let dir_name: &'static str = if inbound { "inbound" } else { "outbound" };
            let target = match (at, spec) {
                (Some(n), []) => Target::At(n),
                (None, spec) if !spec.is_empty() => Target::Rule(Box::new(parse_rule(spec)?)),
                _ => {
                    return Err(CtlError::MissingArgument {
                        what: "--at=<N> or a rule to remove",
                    })
                }
            };
            ds.update_profile_rules(name, |rules| {
                let l = list(rules, inbound);
                let idx = match &target {
                    Target::At(n) => usize::try_from(*n)
                        .ok()
                        .and_then(|n| n.checked_sub(1))
                        .filter(|i| *i < l.len()),
                    Target::Rule(r) => l.iter().position(|x| x == &**r),
                };
                match idx {
                    Some(i) => {
                        l.remove(i);
                        Ok(())
                    }
                    None => Err(DatastoreError::RuleNotFound {
                        profile: name.to_string(),
                        direction: dir_name,
                        rule: target.to_string(),
                    }),
                }
            })
            .await?;
            Ok(format!("Rule {target} removed from {dir_name} rules of profile {name}\n"))
        }
        _ => Err(CtlError::MissingArgument {
            what: "rule subcommand: show | json | update | add (inbound|outbound) ... | remove (inbound|outbound) ...",
        }),
    }
}

enum Target {
    At(i64),
    Rule(Box<Rule>),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::At(n) => write!(f, "#{n}"),
            Target::Rule(r) => write!(f, "\"{}\"", render_rule(r)),
        }
    }
}
