//! `calicoctl bgp` (reference 2.8): global peers, the node-to-node mesh, the default AS.

use calico_backends::Datastore;
use calico_core::model::AsNumber;
use serde_json::json;

use super::args::parse_as;
use super::node::peer_cmd;
use super::output;
use super::{no_more, Args, CtlError};

pub(crate) async fn run(ds: &Datastore, a: &Args, rest: &[&str]) -> Result<String, CtlError> {
    match rest {
        ["peer", more @ ..] => peer_cmd(ds, a, None, more).await,
        ["node-mesh", more @ ..] => {
            a.allow(&[])?;
            match more {
                [] => {
                    let on = ds.node_mesh().await?;
                    if a.json()? {
                        return Ok(output::json(&json!({"enabled": on})));
                    }
                    Ok(if on { "on\n" } else { "off\n" }.to_string())
                }
                [v @ ("on" | "off"), rest @ ..] => {
                    no_more(rest)?;
                    ds.set_node_mesh(*v == "on").await?;
                    Ok(format!("Node-to-node mesh {v}\n"))
                }
                [other, ..] => Err(CtlError::BadArgument {
                    what: "node-mesh setting",
                    value: (*other).to_string(),
                    reason: "expected on or off".into(),
                }),
            }
        }
        ["default-node-as", more @ ..] => {
            a.allow(&[])?;
            match more {
                [] => {
                    let asn = ds.default_as().await?;
                    if a.json()? {
                        return Ok(output::json(&json!({"as_num": asn.0})));
                    }
                    Ok(format!("{asn}\n"))
                }
                [asn, rest @ ..] => {
                    no_more(rest)?;
                    let asn: AsNumber = parse_as("AS number", asn)?;
                    ds.set_default_as(asn).await?;
                    Ok(format!("Default node AS set to {asn}\n"))
                }
            }
        }
        _ => Err(CtlError::MissingArgument {
            what: "bgp subcommand: peer | node-mesh [on|off] | default-node-as [<AS_NUM>]",
        }),
    }
}
