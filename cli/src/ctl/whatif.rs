//! `calicoctl what-if [--probe=<PROBE>]... [-o json] [-o svg=<FILE>] [--fail-on=lost|gained|any]
//! [--] <calicoctl arguments>` (or `-f <FILE>`, proposing `apply -f <FILE>`): which flows a proposed command would allow or deny, answered by
//! the simulator from a snapshot of the live datastore. Nothing is written to the datastore.
//!
//! calicoctl cannot link the simulator (`calico-sim` depends on this crate), so this module
//! only reads the snapshot and hands a [`WhatIfRequest`] to `calico-sim what-if` (found next
//! to this binary, then on `PATH`, as `calicoctl node` finds `calico-node`) on its stdin; the
//! simulator prints the report and exits 0, 3 (a `--fail-on` change) or 1 (an error). The
//! scenario runner, which runs in the simulator's process, answers the same request directly.

use std::path::PathBuf;
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{Ctl, CtlError};

/// The datastore prefix the snapshot holds: everything calico-node reads.
pub const SNAPSHOT_PREFIX: &str = "/calico/";

/// Exit status of `calico-sim what-if` (and `calicoctl what-if`) when `--fail-on` matched.
pub const GATE_EXIT_CODE: i32 = 3;

/// Which verdict changes make `--fail-on` fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    /// A flow allowed before is denied after.
    Lost,
    /// A flow denied before is allowed after.
    Gained,
    /// Either.
    Any,
}

/// How the report is printed (`-o svg=<FILE>` draws the matrix besides, in either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhatIfOutput {
    Text,
    Json,
}

/// Everything the simulator needs to answer one what-if: the snapshot, the host the command
/// runs on and the command itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatIfRequest {
    /// The host whose calicoctl runs the proposed command (`--hostname`, `HOSTNAME`, ...).
    pub hostname: String,
    /// Every key under [`SNAPSHOT_PREFIX`] with its value (UTF-8 text in the v1 model).
    pub snapshot: Vec<(String, String)>,
    /// The proposed calicoctl arguments (after `--`).
    pub command: Vec<String>,
    /// What the proposed command reads on stdin (`profile <P> rule update`).
    pub stdin: String,
    /// `--probe` additions, as written (`tcp/8080`, `udp/53`, `icmp/0`).
    pub probes: Vec<String>,
    pub output: WhatIfOutput,
    /// `-o svg=<FILE>`: the before/after matrix is drawn into this SVG file too.
    #[serde(default)]
    pub svg: Option<PathBuf>,
    pub fail_on: Option<FailOn>,
}

/// The what-if options and the proposed command, parsed from calicoctl's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatIfArgs {
    pub command: Vec<String>,
    /// `-f <FILE>`: the proposed change is `apply` of this resource file (`-` is stdin).
    pub filename: Option<String>,
    pub probes: Vec<String>,
    pub output: WhatIfOutput,
    pub svg: Option<PathBuf>,
    pub fail_on: Option<FailOn>,
}

/// Whether `args` (global options removed) is a `what-if` command line.
pub fn is_what_if(args: &[String]) -> bool {
    let mut it = args.iter().take_while(|a| *a != "--");
    while let Some(arg) = it.next() {
        if arg == "-o" || arg == "--output" {
            it.next();
        } else if !arg.starts_with('-') {
            return arg == "what-if";
        }
    }
    false
}

/// Parses `what-if [options] [--] <command>`: the options up to `--` or the first word that
/// is not one (`--probe` may repeat; `--x=v` or `--x v`), the proposed command from there.
///
/// # Errors
/// An unknown option, a bad `--fail-on` or `-o` value, or no proposed command.
pub fn parse_args(args: &[String]) -> Result<WhatIfArgs, CtlError> {
    let mut parsed = WhatIfArgs {
        command: Vec::new(),
        filename: None,
        probes: Vec::new(),
        output: WhatIfOutput::Text,
        svg: None,
        fail_on: None,
    };
    let mut seen_what_if = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            break;
        }
        if arg == "what-if" && !seen_what_if {
            seen_what_if = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let name = match name {
            "-o" | "--output" => "output",
            "--probe" => "probe",
            "--fail-on" => "fail-on",
            "-f" | "--filename" => "filename",
            other if other.starts_with('-') => {
                return Err(CtlError::UnknownOption {
                    option: other.to_string(),
                })
            }
            // The proposed command starts here.
            _ => {
                parsed.command.push(arg.clone());
                break;
            }
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| CtlError::MissingOptionValue {
                    option: name.to_string(),
                })?,
        };
        match name {
            "probe" => parsed.probes.push(value),
            "fail-on" => parsed.fail_on = Some(parse_fail_on(&value)?),
            "filename" => parsed.filename = Some(value),
            _ => match parse_output(&value)? {
                Output::Format(format) => parsed.output = format,
                Output::Svg(file) => parsed.svg = Some(file),
            },
        }
    }
    parsed.command.extend(it.cloned());
    if parsed.filename.is_some() {
        if !parsed.command.is_empty() {
            return Err(CtlError::BadArgument {
                what: "proposed command",
                value: parsed.command.join(" "),
                reason: "give either -f <FILE> or a command, not both".into(),
            });
        }
        // The file is read by calicoctl and handed over as the command's stdin.
        parsed.command = ["apply", "-f", "-"].map(String::from).to_vec();
    }
    if parsed.command.is_empty() {
        return Err(CtlError::MissingArgument {
            what: "proposed command (e.g. what-if -- profile P rule add inbound deny)",
        });
    }
    if parsed.command.first().is_some_and(|c| c == "what-if") {
        return Err(CtlError::BadArgument {
            what: "proposed command",
            value: "what-if".into(),
            reason: "a what-if cannot propose another what-if".into(),
        });
    }
    Ok(parsed)
}

fn parse_fail_on(value: &str) -> Result<FailOn, CtlError> {
    match value {
        "lost" => Ok(FailOn::Lost),
        "gained" => Ok(FailOn::Gained),
        "any" => Ok(FailOn::Any),
        other => Err(CtlError::BadArgument {
            what: "--fail-on",
            value: other.to_string(),
            reason: "expected lost, gained or any".into(),
        }),
    }
}

/// One `-o` value: the report's format, or the file to draw the matrix into.
enum Output {
    Format(WhatIfOutput),
    Svg(PathBuf),
}

fn parse_output(value: &str) -> Result<Output, CtlError> {
    match value {
        "table" | "text" => Ok(Output::Format(WhatIfOutput::Text)),
        "json" => Ok(Output::Format(WhatIfOutput::Json)),
        other => match other.strip_prefix("svg=") {
            Some(file) if !file.is_empty() => Ok(Output::Svg(PathBuf::from(file))),
            _ => Err(CtlError::BadArgument {
                what: "output format",
                value: other.to_string(),
                reason: "expected json, table or svg=<FILE>".into(),
            }),
        },
    }
}

/// Reads the snapshot and builds the request for `args` run as `ctl.hostname`.
///
/// # Errors
/// Bad options; the datastore failing to list.
pub async fn request(ctl: &Ctl, args: &[String], stdin: &str) -> Result<WhatIfRequest, CtlError> {
    let parsed = parse_args(args)?;
    let stdin = match parsed.filename.as_deref() {
        None | Some("-") => stdin.to_string(),
        Some(file) => std::fs::read_to_string(file).map_err(|e| CtlError::BadArgument {
            what: "file",
            value: file.to_string(),
            reason: e.to_string(),
        })?,
    };
    let (kvs, _) = ctl
        .store
        .list(SNAPSHOT_PREFIX)
        .await
        .map_err(|e| CtlError::Datastore(e.into()))?;
    let snapshot = kvs
        .into_iter()
        .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
        .collect();
    Ok(WhatIfRequest {
        hostname: ctl.hostname.clone(),
        snapshot,
        command: parsed.command,
        stdin,
        probes: parsed.probes,
        output: parsed.output,
        svg: parsed.svg,
        fail_on: parsed.fail_on,
    })
}

/// The `calico-sim` binary: next to this executable, else on `PATH`.
fn simulator_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("calico-sim")))
        .filter(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("calico-sim"))
}

/// `calicoctl what-if ...`: snapshot, then `calico-sim what-if` answers. Returns the report;
/// a `--fail-on` match is [`CtlError::WhatIfGate`] holding the report.
///
/// # Errors
/// Bad options, the datastore, the simulator missing or failing.
pub async fn run(ctl: &Ctl, args: &[String], stdin: &str) -> Result<String, CtlError> {
    let request = request(ctl, args, stdin).await?;
    let binary = simulator_binary();
    let failed = |reason: String| CtlError::WhatIf {
        action: format!("running {} what-if", binary.display()),
        reason,
    };
    let body = serde_json::to_vec(&request).map_err(|e| failed(e.to_string()))?;
    let mut child = tokio::process::Command::new(&binary)
        .arg("what-if")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("{e} (install calico-sim next to calicoctl)")))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(&body)
            .await
            .map_err(|e| failed(format!("writing the request: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => Ok(report),
        Some(GATE_EXIT_CODE) => Err(CtlError::WhatIfGate { report }),
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let reason = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("exited without a message")
                .trim_start_matches("Error: ")
                .to_string();
            Err(failed(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_before_the_double_dash_and_the_command_after() {
        let a = parse_args(&strings(&[
            "what-if",
            "--probe=tcp/80",
            "--probe",
            "udp/53",
            "-o",
            "json",
            "--fail-on=lost",
            "--",
            "profile",
            "P",
            "rule",
            "add",
            "inbound",
            "--at=1",
            "deny",
        ]))
        .unwrap();
        assert_eq!(a.probes, ["tcp/80", "udp/53"]);
        assert_eq!(a.output, WhatIfOutput::Json);
        assert_eq!(a.fail_on, Some(FailOn::Lost));
        assert_eq!(a.command[5], "--at=1");
        let svg = parse_args(&strings(&["what-if", "-o", "svg=m.svg", "--", "x"])).unwrap();
        assert_eq!(svg.output, WhatIfOutput::Text);
        assert_eq!(svg.svg, Some("m.svg".into()));
        let both = parse_args(&strings(&[
            "what-if",
            "-o",
            "svg=m.svg",
            "-o",
            "json",
            "--",
            "x",
        ]));
        let both = both.unwrap();
        assert_eq!(
            (both.output, both.svg),
            (WhatIfOutput::Json, Some("m.svg".into()))
        );
        // Without `--` the proposed command starts at the first word that is no option.
        let bare = parse_args(&strings(&[
            "what-if",
            "--probe=udp/53",
            "profile",
            "P",
            "--at=1",
        ]));
        assert_eq!(bare.unwrap().command, ["profile", "P", "--at=1"]);
        // `-f FILE` proposes applying that resource file.
        let file = parse_args(&strings(&["what-if", "-f", "policy.yaml"])).unwrap();
        assert_eq!(file.filename.as_deref(), Some("policy.yaml"));
        assert_eq!(file.command, ["apply", "-f", "-"]);
    }

    #[test]
    fn bad_lines_name_what_is_wrong() {
        for (line, want) in [
            (&["what-if", "--"][..], "proposed command"),
            (&["what-if", "-o", "json"], "proposed command"),
            (&["what-if", "--fail-on=some", "--", "x"], "--fail-on"),
            (&["what-if", "-o", "yaml", "--", "x"], "yaml"),
            (&["what-if", "--frob", "--", "x"], "--frob"),
            (&["what-if", "--probe"], "probe"),
            (&["what-if", "--", "what-if", "--", "x"], "another what-if"),
            (
                &["what-if", "-f", "p.yaml", "--", "profile", "add", "X"],
                "not both",
            ),
        ] {
            let err = parse_args(&strings(line)).unwrap_err();
            assert!(err.to_string().contains(want), "{line:?}: {err}");
        }
        assert!(is_what_if(&strings(&["-o", "json", "what-if", "--", "x"])));
        assert!(!is_what_if(&strings(&["profile", "what-if"])));
    }
}
