//! The argument vector of one calicoctl invocation, split docopt-style into positionals and
//! `--options` (which may appear anywhere), so commands can match on the positionals.

use std::collections::{BTreeMap, BTreeSet};

use super::CtlError;

/// Options that take a value (`--ip=1.2.3.4` or `--ip 1.2.3.4`).
const VALUED: &[&str] = &[
    "ip",
    "ip6",
    "as",
    "interface",
    "at",
    "output",
    "hostname",
    "host",
    "orchestrator",
    "workload",
    "endpoint",
    "node-image",
    "log-dir",
    "detach",
    "runtime",
    "backend",
    "libnetwork-image",
    "kube-plugin-version",
    "filename",
    "node",
];

/// Parsed arguments.
#[derive(Debug, Clone, Default)]
pub struct Args {
    pub pos: Vec<String>,
    values: BTreeMap<String, String>,
    flags: BTreeSet<String>,
}

impl Args {
    /// Splits `args`. `-o json` is `--output=json`, `-h` is `--help`; `--` ends option parsing;
    /// any other single-dash word is a positional (so a bad name like `-j ACCEPT` reaches the name
    /// validation and is reported as such).
    ///
    /// # Errors
    /// A valued option at the end without its value.
    pub fn parse(args: &[String]) -> Result<Args, CtlError> {
        let mut out = Args::default();
        let mut it = args.iter();
        let mut only_pos = false;
        while let Some(arg) = it.next() {
            if only_pos {
                out.pos.push(arg.clone());
                continue;
            }
            if arg == "--" {
                only_pos = true;
                continue;
            }
            let long = if arg == "-o" {
                Some("output")
            } else if arg == "-h" {
                Some("help")
            } else {
                arg.strip_prefix("--").filter(|s| !s.is_empty())
            };
            let Some(long) = long else {
                out.pos.push(arg.clone());
                continue;
            };
            if let Some((name, value)) = long.split_once('=') {
                out.values.insert(name.to_string(), value.to_string());
            } else if VALUED.contains(&long) {
                let value = it.next().ok_or_else(|| CtlError::MissingOptionValue {
                    option: long.to_string(),
                })?;
                out.values.insert(long.to_string(), value.clone());
            } else {
                out.flags.insert(long.to_string());
            }
        }
        Ok(out)
    }

    /// Fails on any option not in `allowed` (`output` is always allowed).
    pub fn allow(&self, allowed: &[&str]) -> Result<(), CtlError> {
        for name in self.values.keys().chain(&self.flags) {
            if name != "output" && !allowed.contains(&name.as_str()) {
                return Err(CtlError::UnknownOption {
                    option: format!("--{name}"),
                });
            }
        }
        Ok(())
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(name)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether `-o json` / `--output=json` was given.
    ///
    /// # Errors
    /// Any other output format.
    pub fn json(&self) -> Result<bool, CtlError> {
        match self.value("output") {
            None | Some("table") => Ok(false),
            Some("json") => Ok(true),
            Some(other) => Err(CtlError::BadArgument {
                what: "output format",
                value: other.to_string(),
                reason: "expected json or table".into(),
            }),
        }
    }

    /// The positionals as `&str`s, for slice patterns.
    pub fn words(&self) -> Vec<&str> {
        self.pos.iter().map(String::as_str).collect()
    }
}

/// The global options, which the binary acts on before any command runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Globals {
    /// `--datastore sled|etcd`.
    pub datastore: Option<String>,
    /// `--hostname <HOSTNAME>`.
    pub hostname: Option<String>,
}

/// Takes `--datastore` and `--hostname` (`--x=v` or `--x v`) out of `args`, from anywhere
/// before `--`, and returns them with the rest. The value of another valued option is never
/// mistaken for one (`--interface --hostname` keeps `--hostname` as the interface name).
///
/// # Errors
/// A global option at the end without its value.
pub fn split_globals(args: &[String]) -> Result<(Globals, Vec<String>), CtlError> {
    let mut g = Globals::default();
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            rest.push(arg.clone());
            rest.extend(it.by_ref().cloned());
            break;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (arg.as_str(), None),
        };
        let slot = match name {
            "--datastore" => &mut g.datastore,
            "--hostname" => &mut g.hostname,
            _ => {
                rest.push(arg.clone());
                let takes_value = arg == "-o"
                    || arg
                        .strip_prefix("--")
                        .is_some_and(|long| VALUED.contains(&long));
                if takes_value {
                    rest.extend(it.next().cloned());
                }
                continue;
            }
        };
        let value = match inline {
            Some(v) => v.to_string(),
            None => it
                .next()
                .ok_or_else(|| CtlError::MissingOptionValue {
                    option: name.trim_start_matches('-').to_string(),
                })?
                .clone(),
        };
        *slot = Some(value);
    }
    Ok((g, rest))
}

/// Parses `value` or reports it as a bad `what`.
pub fn parse_as<T: std::str::FromStr>(what: &'static str, value: &str) -> Result<T, CtlError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| CtlError::BadArgument {
        what,
        value: value.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[&str]) -> Args {
        Args::parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn options_anywhere_and_both_value_forms() {
        let a = parse(&[
            "container",
            "add",
            "w",
            "1.2.3.4",
            "--interface",
            "eth0",
            "-o",
            "json",
        ]);
        assert_eq!(a.words(), ["container", "add", "w", "1.2.3.4"]);
        assert_eq!(a.value("interface"), Some("eth0"));
        assert!(a.json().unwrap());
        let a = parse(&["profile", "add", "-j ACCEPT", "--no-check"]);
        assert_eq!(a.words(), ["profile", "add", "-j ACCEPT"]);
        assert!(a.flag("no-check"));
        let err = a.allow(&[]).unwrap_err();
        assert!(err.to_string().contains("--no-check"), "{err}");
        assert!(parse(&["node", "-h", "stop"]).flag("help"));
        assert_eq!(parse(&["node", "-h", "stop"]).words(), ["node", "stop"]);
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globals_anywhere_before_double_dash() {
        let (g, rest) = split_globals(&strings(&[
            "-o",
            "json",
            "profile",
            "--hostname=h2",
            "show",
            "--datastore",
            "sled",
        ]))
        .unwrap();
        assert_eq!(g.hostname.as_deref(), Some("h2"));
        assert_eq!(g.datastore.as_deref(), Some("sled"));
        assert_eq!(rest, ["-o", "json", "profile", "show"]);
        let (g, rest) = split_globals(&strings(&[
            "container",
            "add",
            "w",
            "ipv4",
            "--interface",
            "--hostname",
            "--",
            "--hostname=x",
        ]))
        .unwrap();
        assert_eq!(g, Globals::default());
        assert_eq!(rest.len(), 8);
        let err = split_globals(&strings(&["version", "--hostname"])).unwrap_err();
        assert!(err.to_string().contains("--hostname"), "{err}");
    }
}
