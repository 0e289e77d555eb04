//! `calicoctl ipam`, `calicoctl config` and `calicoctl version` (reference 2.9).

use std::net::IpAddr;

use calico_backends::Datastore;
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
            ds.release_ip(ip).await?;
            Ok(format!("Address {ip} released\n"))
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
                    Ok(format!("{}\n", value.unwrap_or_else(|| "(not set)".into())))
                }
                ([], true) => {
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
                    ds.set_felix_config(key, Some(value)).await?;
                    Ok(format!("Set felix config {key} to {value}\n"))
                }
                ([value, ..], true) => Err(CtlError::UnexpectedArgument {
                    arg: (*value).to_string(),
                }),
            }
        }
        ["bgp", "loglevel", level, more @ ..] => {
            no_more(more)?;
            a.allow(&[])?;
            let level: BgpLogLevel = parse_as("BGP log level", level)?;
            ds.set_bgp_loglevel(None, level).await?;
            Ok(format!("Set global BGP log level to {level}\n"))
        }
        ["node", "bgp", "loglevel", level, more @ ..] => {
            no_more(more)?;
            a.allow(&[])?;
            let level: BgpLogLevel = parse_as("BGP log level", level)?;
            ds.set_bgp_loglevel(Some(&ctl.hostname), level).await?;
            Ok(format!("Set BGP log level of node {} to {level}\n", ctl.hostname))
        }
        _ => Err(CtlError::MissingArgument {
            what: "config subcommand: felix <NAME> [<VALUE>|--remove] | bgp loglevel <LEVEL> | node bgp loglevel <LEVEL>",
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
