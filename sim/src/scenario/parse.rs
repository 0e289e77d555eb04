//! The scenario-file grammar (`SCENARIOS.md`): one [`Step`] per meaningful line (a command
//! with a heredoc is one step spanning its body and terminator).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Probe;

/// One scenario line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `host <name> <ipv4> [<ipv6>]`: the host's link carries both addresses.
    Host {
        name: String,
        ip: Ipv4Addr,
        ip6: Option<Ipv6Addr>,
    },
    /// `external <name> <ip>`: a machine on the hosts' link with no agent, routes only to
    /// that link, answering pings and listening on every port an `expect` names.
    External {
        name: String,
        ip: IpAddr,
    },
    Workload {
        host: String,
        name: String,
    },
    /// `<host>$ calicoctl ...` (`must_fail` for `$!`); `args` exclude the word `calicoctl`;
    /// `stdin` is the heredoc body of a line ending in `<<WORD` (each line with its `\n`).
    Calicoctl {
        host: String,
        args: Vec<String>,
        must_fail: bool,
        stdin: Option<String>,
    },
    Settle,
    /// `expect <src> -> <dst> <probe> allow|deny`; `src` names a workload, host or external
    /// machine or an address one holds; `dst` the same or any address at all.
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

/// Parses a whole scenario file. Comments (`#`) and blank lines are skipped; a command line
/// ending in `<<WORD` takes the lines up to one that is exactly `WORD` as its standard input.
pub fn parse(text: &str) -> Result<Vec<Line>, ParseError> {
    let mut lines = Vec::new();
    let mut raw_lines = text.lines().enumerate();
    while let Some((index, raw)) = raw_lines.next() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fail = |reason: &str| ParseError {
            line: index + 1,
            text: trimmed.to_string(),
            reason: reason.to_string(),
        };
        let (command, heredoc) = split_heredoc(trimmed).map_err(|reason| fail(&reason))?;
        let mut step = parse_line(command).map_err(|reason| fail(&reason))?;
        if let Some(word) = heredoc {
            let Step::Calicoctl { stdin, .. } = &mut step else {
                return Err(fail("only a calicoctl command line can take a heredoc"));
            };
            let mut body = String::new();
            let closed = raw_lines.by_ref().any(|(_, line)| {
                let end = line == word;
                if !end {
                    body.push_str(line);
                    body.push('\n');
                }
                end
            });
            if !closed {
                return Err(fail(&format!("heredoc has no line {word:?} to end it")));
            }
            *stdin = Some(body);
        }
        lines.push(Line {
            number: index + 1,
            text: trimmed.to_string(),
            step,
        });
    }
    Ok(lines)
}

/// Splits a trailing `<<WORD` (or `<<'WORD'`, `<<"WORD"`) off a line: the command before it
/// and the terminator word. A `<<` inside quotes is an argument, not a heredoc.
fn split_heredoc(line: &str) -> Result<(&str, Option<&str>), String> {
    let Some(at) = line.rfind("<<") else {
        return Ok((line, None));
    };
    let word = line[at + 2..].trim();
    let unquoted = ['\'', '"']
        .iter()
        .find_map(|q| word.strip_prefix(*q).and_then(|w| w.strip_suffix(*q)))
        .unwrap_or(word);
    let is_word = !unquoted.is_empty()
        && unquoted
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !is_word {
        // A `<<` that ends no word (inside an argument or quotes) is left to the argument split.
        return Ok((line, None));
    }
    let before = line[..at].trim_end();
    if shlex::split(before).is_none() {
        return Ok((line, None));
    }
    Ok((before, Some(unquoted)))
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
            stdin: None,
        });
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["host", name, ip, ip6 @ ..] if ip6.len() <= 1 => {
            let ip = ip
                .parse()
                .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
            let ip6 = match ip6.first() {
                Some(word) => Some(
                    word.parse()
                        .map_err(|_| format!("{word:?} is not an IPv6 address"))?,
                ),
                None => None,
            };
            Ok(Step::Host {
                name: name.to_string(),
                ip,
                ip6,
            })
        }
        ["external", name, ip] => Ok(Step::External {
            name: name.to_string(),
            ip: ip
                .parse()
                .map_err(|_| format!("{ip:?} is not an IP address"))?,
        }),
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
        _ => Err("not a host, external, workload, calicoctl, settle or expect line".into()),
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
                ip: Ipv4Addr::new(172, 31, 250, 1),
                ip6: None,
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
                must_fail: false,
                stdin: None,
            }
        );
        assert_eq!(
            steps[3],
            Step::Calicoctl {
                host: "host1".into(),
                args: vec!["profile".into(), "add".into(), "bad name".into()],
                must_fail: true,
                stdin: None,
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
            ("host h1 172.31.250.1 172.31.250.2", "not an IPv6"),
            ("host h1 172.31.250.1 fd00::1 fd00::2", "not a host"),
            ("external e1 nowhere", "not an IP"),
            ("settle <<EOF", "only a calicoctl"),
            (
                "h1$ calicoctl profile P rule update <<EOF\n{}",
                "no line \"EOF\"",
            ),
        ] {
            let err = parse(&format!("# c\n{text}\n")).unwrap_err();
            assert_eq!(err.line, 2, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }

    #[test]
    fn ipv6_hosts_and_external_machines_parse() {
        let steps: Vec<Step> = parse("host h1 172.31.250.1 fd5e::1\nexternal net 172.31.250.100\n")
            .unwrap()
            .into_iter()
            .map(|l| l.step)
            .collect();
        assert_eq!(
            steps,
            vec![
                Step::Host {
                    name: "h1".into(),
                    ip: Ipv4Addr::new(172, 31, 250, 1),
                    ip6: Some("fd5e::1".parse().unwrap()),
                },
                Step::External {
                    name: "net".into(),
                    ip: "172.31.250.100".parse().unwrap(),
                },
            ]
        );
    }

    #[test]
    fn a_heredoc_is_the_commands_stdin_up_to_its_word() {
        let text = "h1$ calicoctl profile P rule update <<EOF\n{\"inbound_rules\": []}\n  EOF\n\
                    # not a comment in here\nEOF\nsettle\n";
        let lines = parse(text).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].number, 1);
        assert_eq!(
            lines[0].step,
            Step::Calicoctl {
                host: "h1".into(),
                args: vec!["profile".into(), "P".into(), "rule".into(), "update".into()],
                must_fail: false,
                stdin: Some("{\"inbound_rules\": []}\n  EOF\n# not a comment in here\n".into()),
            }
        );
        assert_eq!((lines[1].number, &lines[1].step), (6, &Step::Settle));
        // A quoted word is the same terminator; `<<` inside an argument is no heredoc.
        let quoted = parse("h1$ calicoctl profile add P <<'END'\nx\nEND\n").unwrap();
        assert!(matches!(&quoted[0].step, Step::Calicoctl { stdin: Some(s), .. } if s == "x\n"));
        let arg = parse("h1$ calicoctl profile add \"a<<b\"\n").unwrap();
        assert!(
            matches!(&arg[0].step, Step::Calicoctl { args, stdin: None, .. } if args[2] == "a<<b")
        );
    }
}
