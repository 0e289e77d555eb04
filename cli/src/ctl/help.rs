//! Help text rendered from the grammar tables ([`super::grammar`]): `calicoctl help [<command>]`,
//! `-h`/`--help` anywhere on a line, and the usage lines shown with a usage error.

use super::grammar::{self, Command, Opt, COMMANDS, GLOBAL_OPTIONS};
use super::{Args, CtlError};

/// The top-level usage `calicoctl`, `calicoctl help` and `calicoctl --help` print.
pub fn top_level() -> String {
    let mut out = String::from(
        "Usage:\n  calicoctl [options] <command> [<args>...]\n  calicoctl help [<command>]\n\n",
    );
    out.push_str("Commands:\n");
    for c in COMMANDS {
        out.push_str(&format!("    {:<16}{}\n", c.name, c.summary));
    }
    out.push_str(&format!(
        "    {:<16}{}\n",
        "help", "Show the usage of a command"
    ));
    out.push_str("\nOptions (anywhere on the line):\n");
    out.push_str(&options_block(GLOBAL_OPTIONS));
    out.push_str("\nSee 'calicoctl <command> --help' to read about a specific command.\n");
    out
}

/// The full help of one command: Usage, Description, Options and any further sections.
pub fn command_help(c: &Command) -> String {
    let mut out = usage_lines(c);
    out.push_str("\nDescription:\n");
    for line in c.description.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    if !c.options.is_empty() {
        out.push_str("\nOptions:\n");
        out.push_str(&options_block(c.options));
    }
    if !c.extra.is_empty() {
        out.push('\n');
        out.push_str(c.extra);
    }
    out
}

/// The `Usage:` section of one command, each line prefixed with `calicoctl`.
pub fn usage_lines(c: &Command) -> String {
    let mut out = String::from("Usage:\n");
    for line in c.usage {
        out.push_str(&format!("  calicoctl {line}\n"));
    }
    out
}

/// `  --name=<VALUE>  help [default: x]`, the help column aligned, its continuation lines too.
fn options_block(opts: &[Opt]) -> String {
    let left = |o: &Opt| {
        let short = if o.name == "--output" { "-o, " } else { "" };
        let short = if o.name == "--help" { "-h, " } else { short };
        if o.value.is_empty() {
            format!("{short}{}", o.name)
        } else {
            format!("{short}{}={}", o.name, o.value)
        }
    };
    // As docopt help does: a long option gets its help on the next line rather than
    // pushing every help text far to the right.
    const MAX_LEFT: usize = 26;
    let width = opts
        .iter()
        .map(|o| left(o).len())
        .filter(|w| *w <= MAX_LEFT)
        .max()
        .unwrap_or(0)
        + 2;
    let mut out = String::new();
    for o in opts {
        let mut text = o.help.to_string();
        if !o.default.is_empty() {
            let last = text.lines().last().unwrap_or_default().len();
            let default = format!("[default: {}]", o.default);
            // Keep lines within 80 columns where the default would overflow them.
            let sep = if 2 + width + last + 1 + default.len() > 80 {
                "\n"
            } else {
                " "
            };
            text.push_str(sep);
            text.push_str(&default);
        }
        let mut head = left(o);
        if head.len() + 2 > width {
            out.push_str(&format!("  {head}\n"));
            head.clear();
        }
        for line in text.lines() {
            out.push_str(&format!("  {head:<width$}{line}\n"));
            head.clear();
        }
    }
    out
}

/// Whether `args` ask for help, and if so the text: `-h`/`--help` anywhere before `--`, or
/// the `help` command. `Ok(None)` when the line is not a help request.
///
/// # Errors
/// `help <word>` for a word that is no command.
pub fn requested(args: &[String]) -> Result<Option<String>, CtlError> {
    let flagged = args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help");
    let words = positionals(args);
    match words.first().map(String::as_str) {
        Some("help") => {
            return match words.get(1) {
                None => Ok(Some(top_level())),
                Some(name) => grammar::command(name)
                    .map(|c| Some(command_help(c)))
                    .ok_or_else(|| CtlError::UnknownCommand {
                        command: name.clone(),
                    }),
            };
        }
        Some(name) if flagged => {
            return Ok(Some(
                grammar::command(name).map_or_else(top_level, command_help),
            ))
        }
        _ => {}
    }
    Ok(flagged.then(top_level))
}

/// What to show under a failed command's error: the usage lines of the command the line
/// concerns for a usage error (the top-level usage for an unknown command), else nothing.
pub fn usage_for(args: &[String], err: &CtlError) -> Option<String> {
    if !err.is_usage() {
        return None;
    }
    let words = positionals(args);
    match words.first().and_then(|w| grammar::command(w)) {
        Some(c) if !matches!(err, CtlError::UnknownCommand { .. }) => Some(format!(
            "{}\nSee 'calicoctl {} --help'.\n",
            usage_lines(c),
            c.name
        )),
        _ => Some(top_level()),
    }
}

/// The positional words of `args` (a line that does not parse: its words not starting
/// with `-`, which is the best guess at the command it was meant to be).
fn positionals(args: &[String]) -> Vec<String> {
    match Args::parse(args) {
        Ok(a) => a.pos,
        Err(_) => args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_are_aligned_with_defaults() {
        let text = command_help(grammar::command("container").unwrap());
        assert!(
            text.contains(
                "  --interface=<INTERFACE>  The name to give to the interface in the container.\n                           [default: eth1]\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn help_anywhere_and_help_command() {
        let node = command_help(grammar::command("node").unwrap());
        let got = requested(&strings(&["node", "stop", "-h", "--force"])).unwrap();
        assert_eq!(got.as_deref(), Some(node.as_str()));
        let got = requested(&strings(&["help", "node"])).unwrap();
        assert_eq!(got.as_deref(), Some(node.as_str()));
        assert_eq!(requested(&strings(&["node", "stop"])).unwrap(), None);
        // After `--`, -h is an argument.
        assert_eq!(
            requested(&strings(&["profile", "add", "--", "-h"])).unwrap(),
            None
        );
        let err = requested(&strings(&["help", "frobnicate"])).unwrap_err();
        assert!(err.to_string().contains("frobnicate"), "{err}");
    }
}
