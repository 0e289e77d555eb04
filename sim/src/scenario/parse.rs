//! The scenario-file grammar (`shared/SCENARIOS.md`): one [`Step`] per meaningful line.

use std::net::Ipv4Addr;

use crate::Probe;

/// One scenario line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Host {
        name: String,
        ip: Ipv4Addr,
    },
    Workload {
        host: String,
        name: String,
    },
    /// `<host>$ calicoctl ...` (`must_fail` for `$!`); `args` exclude the word `calicoctl`.
    Calicoctl {
        host: String,
        args: Vec<String>,
        must_fail: bool,
    },
    Settle,
    /// `expect <src> -> <dst> <probe> allow|deny`; `src`/`dst` are workload names or addresses.
    Expect {
        src: String,
        dst: String,
        probe: Probe,
        allow: bool,
    },
}

/// A step with the 1-based line it came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub text: String,
    pub step: Step,
}

/// A line that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text}")]
pub struct ParseError {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

/// Parses a whole scenario file. Comments (`#`) and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Line>, ParseError> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fail = |reason: &str| ParseError {
            line: index + 1,
            text: trimmed.to_string(),
            reason: reason.to_string(),
        };
        let step = parse_line(trimmed).map_err(|reason| fail(&reason))?;
        lines.push(Line {
            number: index + 1,
            text: trimmed.to_string(),
            step,
        });
    }
    Ok(lines)
}

fn parse_line(line: &str) -> Result<Step, String> {
    if let Some((host, rest)) = split_prompt(line) {
        let (must_fail, command) = match rest.strip_prefix('!') {
            Some(command) => (true, command),
            None => (false, rest),
        };
        let words = shlex::split(command).ok_or("unbalanced quotes or a trailing backslash")?;
        let Some(("calicoctl", args)) = words.split_first().map(|(w, a)| (w.as_str(), a)) else {
            return Err("only calicoctl commands can be run on a host".into());
        };
        return Ok(Step::Calicoctl {
            host: host.to_string(),
            args: args.to_vec(),
            must_fail,
        });
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["host", name, ip] => {
            let ip = ip
                .parse()
                .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
            Ok(Step::Host {
                name: name.to_string(),
                ip,
            })
        }
        ["workload", host, name] => Ok(Step::Workload {
            host: host.to_string(),
            name: name.to_string(),
        }),
        ["settle"] => Ok(Step::Settle),
        ["expect", src, "->", dst, probe, verdict] => Ok(Step::Expect {
            src: src.to_string(),
            dst: dst.to_string(),
            probe: parse_probe(probe)?,
            allow: match *verdict {
                "allow" => true,
                "deny" => false,
                other => return Err(format!("verdict {other:?} is neither allow nor deny")),
            },
        }),
        _ => Err("not a host, workload, calicoctl, settle or expect line".into()),
    }
}

/// `host1$ ...` or `host1$! ...`: the prompt is a bare word followed by `$`.
fn split_prompt(line: &str) -> Option<(&str, &str)> {
    let (host, rest) = line.split_once('$')?;
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    valid.then_some((host, rest))
}

/// `icmp` (an echo request), `tcp/<port>` or `udp/<port>`; the simulator's richer probe
/// forms (`icmp/<type>/<code>`, ...) are accepted too, a compatible extension.
fn parse_probe(word: &str) -> Result<Probe, String> {
    if matches!(word, "tcp" | "udp") {
        return Err(format!("probe {word:?} needs a port: {word}/<port>"));
    }
    word.parse()
        .map_err(|e: crate::probe::ProbeParseError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_from_the_grammar_parses() {
        let text = "# seed\nhost host1 172.31.250.1\n\nworkload host1 workload_A\n\
                    host1$ calicoctl container add workload_A 192.168.1.1\n\
                    host1$! calicoctl profile add \"bad name\"\nsettle\n\
                    expect workload_A -> 192.168.1.2 tcp/80 allow\n";
        let steps: Vec<Step> = parse(text).unwrap().into_iter().map(|l| l.step).collect();
        assert_eq!(
            steps[0],
            Step::Host {
                name: "host1".into(),
                ip: Ipv4Addr::new(172, 31, 250, 1)
            }
        );
        assert_eq!(
            steps[2],
            Step::Calicoctl {
                host: "host1".into(),
                args: vec![
                    "container".into(),
                    "add".into(),
                    "workload_A".into(),
                    "192.168.1.1".into()
                ],
                must_fail: false
            }
        );
        assert_eq!(
            steps[3],
            Step::Calicoctl {
                host: "host1".into(),
                args: vec!["profile".into(), "add".into(), "bad name".into()],
                must_fail: true
            }
        );
        assert_eq!(steps[4], Step::Settle);
        assert_eq!(
            steps[5],
            Step::Expect {
                src: "workload_A".into(),
                dst: "192.168.1.2".into(),
                probe: Probe::tcp(80),
                allow: true
            }
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        for (text, reason) in [
            ("host h1 not-an-ip", "not an IPv4"),
            ("expect a -> b tcp allow", "probe"),
            ("expect a -> b icmp maybe", "verdict"),
            ("h1$ rm -rf /", "only calicoctl"),
            ("h1$ calicoctl profile add \"open", "quotes"),
            ("frobnicate", "not a host"),
        ] {
            let err = parse(&format!("# c\n{text}\n")).unwrap_err();
            assert_eq!(err.line, 2, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }
}
