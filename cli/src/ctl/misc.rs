//! `calicoctl ipam`, `calicoctl config` and `calicoctl version` (reference 2.9).

use std::net::IpAddr;

use calico_backends::{Datastore, DatastoreError};
use calico_core::codec::Value;
use calico_core::compute::config::{
    parse_failsafe_ports, FAILSAFE_INBOUND_KEY, FAILSAFE_OUTBOUND_KEY,
};
use calico_core::keys::Key;
use calico_core::model::BgpLogLevel;
use serde_json::json;

use super::args::parse_as;
use super::output;
use super::{no_more, Args, Ctl, CtlError};

pub(crate) async fn ipam(ds: &Datastore, a: &Args, rest: &[&str]) -> Result<String, CtlError> {
    a.allow(&[])?;
    match rest {
        ["info", ip, more @ ..] => {
            no_more(more)?;
            let ip: IpAddr = parse_as("IP address", ip)?;
            let info = ds.ipam_info(ip).await?;
            if a.json()? {
                return Ok(output::json(&info.map(|i| {
                    json!({"ip": i.ip, "block": i.block, "affinity": i.affinity,
                           "handle_id": i.handle_id, "attributes": i.secondary})
                })));
            }
            Ok(match info {
                None => format!("IP address {ip} is not currently assigned\n"),
                Some(i) => format!(
                    "IP address {ip} is assigned\n  block: {}\n  affinity: {}\n  handle: {}\n  attributes: {:?}\n",
                    i.block,
                    i.affinity.unwrap_or_else(|| "none".into()),
                    i.handle_id.unwrap_or_else(|| "none".into()),
                    i.secondary
                ),
            })
        }
        ["release", ip, more @ ..] => {
            no_more(more)?;
            let ip: IpAddr = parse_as("IP address", ip)?;
            // As the original: releasing an address that is not assigned reports it and
            // succeeds (the address is free either way).
            match ds.release_ip(ip).await {
                Ok(()) => Ok(format!("Address {ip} released\n")),
                Err(DatastoreError::IpNotAssigned { .. }) => Ok(format!(
                    "IP address {ip} is not currently assigned; nothing to release\n"
                )),
                Err(e) => Err(e.into()),
            }
        }
        _ => Err(CtlError::MissingArgument {
            what: "ipam subcommand: info <IP> | release <IP>",
        }),
    }
}

const FELIX_LOG_LEVELS: &[&str] = &["none", "debug", "info", "warning", "error", "critical"];

pub(crate) async fn config(
    ctl: &Ctl,
    ds: &Datastore,
    a: &Args,
    rest: &[&str],
) -> Result<String, CtlError> {
    match rest {
        ["felix", name, more @ ..] => {
            a.allow(&["remove", "force"])?;
            let key = match *name {
                "loglevel" => "LogSeverityScreen",
                FAILSAFE_INBOUND_KEY | FAILSAFE_OUTBOUND_KEY => name,
                other if a.flag("force") => other,
                other => {
                    return Err(CtlError::BadArgument {
                        what: "felix config name",
                        value: other.to_string(),
                        reason: "only loglevel is known; use --force to write another name".into(),
                    })
                }
            };
            match (more, a.flag("remove")) {
                ([], false) => {
                    let value = ds.felix_config(key).await?;
                    if a.json()? {
                        return Ok(output::json(&json!({ (*name): value })));
                    }
                    Ok(format!("{}\n", value.as_deref().unwrap_or(NO_VALUE)))
                }
                ([], true) => {
                    // As the original: removing what is not set says so and succeeds.
                    if ds.felix_config(key).await?.is_none() {
                        return Ok(format!("{NO_VALUE}\n"));
                    }
                    ds.set_felix_config(key, None).await?;
                    Ok(format!("Removed felix config {key}\n"))
                }
                ([value, rest @ ..], false) => {
                    no_more(rest)?;
                    if *name == "loglevel" && !FELIX_LOG_LEVELS.contains(value) {
                        return Err(CtlError::BadArgument {
                            what: "felix log level",
                            value: (*value).to_string(),
                            reason: format!("expected one of {}", FELIX_LOG_LEVELS.join(", ")),
                        });
                    }
                    let failsafe = [FAILSAFE_INBOUND_KEY, FAILSAFE_OUTBOUND_KEY]
                        .into_iter()
                        .find(|k| k == name);
                    if let Some(field) = failsafe.filter(|_| !a.flag("force")) {
                        parse_failsafe_ports(field, value).map_err(|e| CtlError::BadArgument {
                            what: "failsafe port list",
                            value: (*value).to_string(),
                            reason: format!("{e}; expected e.g. tcp:22,udp:68 or none"),
                        })?;
                    }
                    ds.set_felix_config(key, Some(value)).await?;
                    Ok(format!("Set felix config {key} to {value}\n"))
                }
                ([value, ..], true) => Err(CtlError::UnexpectedArgument {
                    arg: (*value).to_string(),
                }),
            }
        }
        ["bgp", name, more @ ..] => bgp_config(ds, a, None, name, more).await,
        ["node", "bgp", name, more @ ..] => {
            bgp_config(ds, a, Some(&ctl.hostname), name, more).await
        }
        _ => Err(CtlError::MissingArgument {
            what: "config subcommand: felix|bgp|node bgp <NAME> [<VALUE>|--remove]",
        }),
    }
}

/// What the original printed for a config entry that is not set.
const NO_VALUE: &str = "No value configured";

/// `config bgp <NAME> [<VALUE>|--remove]` (host `None`) and `config node bgp ...`: show, set
/// or remove BIRD's log level. Only `loglevel` is known, and `--force` cannot widen that: the
/// datastore keeps typed BGP values, so an unknown name or level has no key to go to.
async fn bgp_config(
    ds: &Datastore,
    a: &Args,
    host: Option<&str>,
    name: &str,
    rest: &[&str],
) -> Result<String, CtlError> {
    a.allow(&["remove", "force"])?;
    if name != "loglevel" {
        return Err(CtlError::BadArgument {
            what: "BGP config name",
            value: name.to_string(),
            reason: "only loglevel is known".into(),
        });
    }
    let key = match host {
        None => Key::GlobalBgpLogLevel,
        Some(h) => Key::HostBgpLogLevel {
            host: h.to_string(),
        },
    };
    match (rest, a.flag("remove")) {
        ([], false) => {
            let level = match ds.get(&key).await?.map(|v| v.value) {
                None => None,
                Some(Value::LogLevel(level)) => Some(level.to_string()),
                Some(_) => {
                    return Err(CtlError::Datastore(DatastoreError::UnexpectedValue {
                        key: key.to_string(),
                    }))
                }
            };
            if a.json()? {
                return Ok(output::json(&json!({ "loglevel": level })));
            }
            Ok(format!("{}\n", level.as_deref().unwrap_or(NO_VALUE)))
        }
        ([], true) => Ok(if ds.delete(&key).await? {
            "Value removed\n".to_string()
        } else {
            format!("{NO_VALUE}\n")
        }),
        ([value, more @ ..], false) => {
            no_more(more)?;
            let level: BgpLogLevel = parse_as("BGP log level", value)?;
            ds.set_bgp_loglevel(host, level).await?;
            Ok(match host {
                None => format!("Set global BGP log level to {level}\n"),
                Some(h) => format!("Set BGP log level of node {h} to {level}\n"),
            })
        }
        ([value, ..], true) => Err(CtlError::UnexpectedArgument {
            arg: (*value).to_string(),
        }),
    }
}

pub(crate) fn version(a: &Args, rest: &[&str]) -> Result<String, CtlError> {
    no_more(rest)?;
    a.allow(&["version"])?;
    if a.json()? {
        return Ok(output::json(&json!({"version": env!("CARGO_PKG_VERSION")})));
    }
    Ok(format!("calicoctl {}\n", env!("CARGO_PKG_VERSION")))
}
