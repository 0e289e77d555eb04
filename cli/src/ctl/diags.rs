//! `calicoctl diags [--log-dir=<LOG_DIR>]` (reference 2.9): the original's diagnostics
//! bundle, a `.tar.gz` in a fresh temp dir holding what a maintainer asks for first:
//!
//! - `commands/*.txt`: `iptables-save`, `ip6tables-save`, `ipset list`, `ip route`,
//!   `ip -6 route`, `ip link`, `ip addr`;
//! - `datastore.txt`: every record of this host (Felix, BGP, status and IPAM-affinity trees)
//!   and the global config, pools and BGP settings, one `<key> <value>` line each;
//! - `status.txt` and `versions.txt`: `calicoctl status` and the versions of calicoctl,
//!   calico-node and BIRD;
//! - the node's own files ([`NodeControl::diagnostics`](super::NodeControl)): the agent and
//!   BIRD logs, BIRD's configs and `birdc show protocols all`.
//!
//! A part that cannot be collected (a tool missing, a log absent, the datastore down) is an
//! entry holding its error, so one failure never loses the rest of the bundle.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::context::DiagFile;
use super::{no_more, Args, Ctl, CtlError};
use calico_backends::Store;
use calico_core::keys::Key;

/// The host-wide tools the bundle runs, as `(entry name, program, args)`.
const COMMANDS: &[(&str, &str, &[&str])] = &[
    ("commands/iptables-save.txt", "iptables-save", &[]),
    ("commands/ip6tables-save.txt", "ip6tables-save", &[]),
    ("commands/ipset-list.txt", "ipset", &["list"]),
    ("commands/ip-route.txt", "ip", &["route"]),
    ("commands/ip-6-route.txt", "ip", &["-6", "route"]),
    ("commands/ip-link.txt", "ip", &["link"]),
    ("commands/ip-addr.txt", "ip", &["addr"]),
];

pub(crate) async fn run(ctl: &Ctl, a: &Args, rest: &[&str]) -> Result<String, CtlError> {
    no_more(rest)?;
    a.allow(&["log-dir"])?;
    let log_dir = a.value("log-dir").map(PathBuf::from);
    let mut files = Vec::new();
    for (name, program, args) in COMMANDS {
        files.push(command_entry(name, program, args));
    }
    files.push(DiagFile {
        name: "datastore.txt".into(),
        content: datastore_dump(ctl.store.as_ref(), &ctl.hostname).await,
    });
    let status = super::node::status_text(ctl, false)
        .await
        .unwrap_or_else(|e| format!("error: {e}\n"));
    files.push(DiagFile {
        name: "status.txt".into(),
        content: status.into_bytes(),
    });
    files.push(DiagFile {
        name: "versions.txt".into(),
        content: versions(ctl).await.into_bytes(),
    });
    files.extend(ctl.node.diagnostics(log_dir.as_deref()).await);

    let dir = tempfile::Builder::new()
        .prefix("calico-diags-")
        .tempdir()
        .map_err(|e| diags_error("creating a temp dir", &e))?
        .keep();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = dir.join(format!("diags-{}-{stamp}.tar.gz", ctl.hostname));
    write_bundle(&path, &format!("diags-{}", ctl.hostname), &files)
        .map_err(|e| diags_error(&format!("writing {}", path.display()), &e))?;
    Ok(format!(
        "Collected {} diagnostics files\nDiags saved to {}\n",
        files.len(),
        path.display()
    ))
}

fn diags_error(action: &str, e: &std::io::Error) -> CtlError {
    CtlError::Node {
        action: format!("collecting diagnostics: {action}"),
        reason: e.to_string(),
    }
}

/// Runs `program args` and keeps its output; a tool that is missing or fails leaves its
/// error (and whatever it printed) in the entry instead.
pub(crate) fn command_entry(name: &str, program: &str, args: &[&str]) -> DiagFile {
    let line = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut content = format!("$ {line}\n").into_bytes();
    match Command::new(program).args(args).output() {
        Ok(out) => {
            content.extend_from_slice(&out.stdout);
            if !out.status.success() {
                content.extend_from_slice(
                    format!("error: {line} failed: {}\n", out.status).as_bytes(),
                );
                content.extend_from_slice(&out.stderr);
            }
        }
        Err(e) => content.extend_from_slice(format!("error: running {line}: {e}\n").as_bytes()),
    }
    DiagFile {
        name: name.to_owned(),
        content,
    }
}

/// The prefixes of this host's records and of the global ones the agent reads.
fn dump_prefixes(host: &str) -> Vec<String> {
    vec![
        "/calico/v1/Ready".to_owned(),
        "/calico/v1/config/".to_owned(),
        "/calico/v1/ipam/".to_owned(),
        "/calico/bgp/v1/global/".to_owned(),
        Key::host_dir(host),
        Key::bgp_host_dir(host),
        format!("/calico/felix/v1/host/{host}/"),
        format!("/calico/ipam/v2/host/{host}/"),
    ]
}

/// `<key> <value>` lines of every record under [`dump_prefixes`], or the error listing them.
async fn datastore_dump(store: &dyn Store, host: &str) -> Vec<u8> {
    let mut out = String::new();
    for prefix in dump_prefixes(host) {
        match store.list(&prefix).await {
            Ok((kvs, _)) => {
                for kv in kvs {
                    out.push_str(&format!(
                        "{} {}\n",
                        kv.key,
                        String::from_utf8_lossy(&kv.value)
                    ));
                }
            }
            Err(e) => out.push_str(&format!("error: listing {prefix}: {e}\n")),
        }
    }
    out.into_bytes()
}

async fn versions(ctl: &Ctl) -> String {
    let node = ctl
        .node
        .version()
        .await
        .unwrap_or_else(|| "calico-node: version unknown".to_owned());
    // BIRD prints its version on stderr.
    let bird = match Command::new("bird").arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&[out.stdout, out.stderr].concat())
            .trim()
            .to_owned(),
        Err(e) => format!("error: running bird --version: {e}"),
    };
    format!("calicoctl {}\n{node}\n{bird}\n", env!("CARGO_PKG_VERSION"))
}

/// Writes `files` as a gzipped tar under the directory `root`.
fn write_bundle(path: &Path, root: &str, files: &[DiagFile]) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    for f in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(f.content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("{root}/{}", f.name),
            f.content.as_slice(),
        )?;
    }
    tar.into_inner()?.finish()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_leaves_its_error_in_the_entry() {
        let entry = command_entry("x.txt", "calico-no-such-tool", &["--flag"]);
        let text = String::from_utf8(entry.content).unwrap();
        assert!(text.starts_with("$ calico-no-such-tool --flag\n"), "{text}");
        assert!(
            text.contains("error: running calico-no-such-tool --flag"),
            "{text}"
        );
    }

    #[test]
    fn a_failing_tool_keeps_its_stderr() {
        let entry = command_entry("x.txt", "ls", &["/calico-no-such-dir"]);
        let text = String::from_utf8(entry.content).unwrap();
        assert!(
            text.contains("error: ls /calico-no-such-dir failed"),
            "{text}"
        );
        assert!(text.contains("calico-no-such-dir"), "{text}");
    }

    #[test]
    fn the_dump_covers_this_hosts_trees_only() {
        let prefixes = dump_prefixes("host1");
        assert!(
            prefixes.contains(&"/calico/v1/host/host1/".to_owned()),
            "{prefixes:?}"
        );
        assert!(prefixes.iter().all(|p| !p.contains("host2")));
    }
}
