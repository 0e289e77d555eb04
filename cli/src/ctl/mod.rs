//! calicoctl: the v1 command set (reference section 2) over a [`Ctl`] context.
//!
//! - [`run`] / [`run_with_input`]: the entry point; parse the argument vector ([`args`]),
//!   dispatch on the first word to one module per command, return what to print.
//! - `node`, `pool`, `container`, `endpoint`, `profile` (+ `rule_syntax`), `bgp`, `misc`
//!   (ipam, config, version), `checksystem`.
//! - [`grammar`]: one table per command (usage lines, description, options with defaults),
//!   read by [`help`] (`--help`, `-h`, `help <command>`, usage errors) and by `completion`
//!   (the bash completion script).
//! - [`output`]: aligned tables and JSON; [`CtlError`]: every failure, naming the object.
//! - [`host_env`]: the real machine's resolver, hostname and the placeholders for the Linux
//!   dataplane and node launcher that land later.

pub mod args;
mod bgp;
mod checksystem;
mod completion;
mod container;
mod context;
mod diags;
mod docker;
mod endpoint;
mod error;
pub mod grammar;
pub mod help;
pub mod host_env;
mod ids;
pub mod message;
mod misc;
mod node;
pub mod output;
mod pool;
mod profile;
mod resource;
mod rule_syntax;
pub mod whatif;

use calico_backends::Datastore;

pub use args::{split_globals, Args, Globals};
pub use completion::pattern as completion_pattern;
pub use context::{
    BgpPeerStatus, Ctl, DiagFile, NodeControl, NodeStartOptions, NodeStatus, Workload,
    WorkloadResolver,
};
pub use error::CtlError;
pub use node::detect_ipv4;

/// Runs one calicoctl command (`args` without the leading `calicoctl`) and returns what to
/// print on stdout.
///
/// # Errors
/// A [`CtlError`] naming what was wrong; nothing is left half-written.
pub async fn run(ctl: &Ctl, args: &[String]) -> Result<String, CtlError> {
    run_with_input(ctl, args, "").await
}

/// [`run`] with the text `profile <P> rule update` reads as its standard input.
///
/// # Errors
/// As [`run`].
pub async fn run_with_input(ctl: &Ctl, args: &[String], stdin: &str) -> Result<String, CtlError> {
    let (globals, args) = split_globals(args)?;
    if let Some(text) = help::requested(&args)? {
        return Ok(text);
    }
    if let Some(datastore) = globals.datastore {
        // The binary takes --datastore before it builds the Ctl; here the store is given.
        return Err(CtlError::BadArgument {
            what: "option --datastore",
            value: datastore,
            reason: "the datastore is chosen when calicoctl starts".into(),
        });
    }
    let renamed;
    let ctl = match globals.hostname {
        Some(hostname) => {
            renamed = Ctl {
                hostname,
                ..ctl.clone()
            };
            &renamed
        }
        None => ctl,
    };
    // Every command may put the hostname into a key (`/calico/v1/host/<h>/...`).
    calico_core::names::validate_hostname(&ctl.hostname)?;
    let a = Args::parse(&args)?;
    let ds = Datastore::new(ctl.store.clone());
    let words = a.words();
    let (cmd, rest) = match words.split_first() {
        Some((cmd, rest)) => (*cmd, rest),
        None if a.flag("version") => ("version", &[][..]),
        None => return Ok(help::top_level()),
    };
    match cmd {
        "node" => node::run(ctl, &ds, &a, rest).await,
        "status" => node::status(ctl, &a, rest).await,
        "pool" => pool::run(&ds, &a, rest).await,
        "container" => container::run(ctl, &ds, &a, rest).await,
        "endpoint" => endpoint::run(&ds, &a, rest).await,
        "profile" => profile::run(&ds, &a, rest, stdin).await,
        "bgp" => bgp::run(&ds, &a, rest).await,
        "ipam" => misc::ipam(&ds, &a, rest).await,
        "config" => misc::config(ctl, &ds, &a, rest).await,
        "checksystem" => checksystem::run(&a, rest),
        "diags" => diags::run(ctl, &a, rest).await,
        "version" => misc::version(&a, rest),
        "get" => resource::run_get(&ds, &a, rest).await,
        verb @ ("create" | "apply" | "replace" | "delete") => {
            let verb = resource::Verb::parse(verb).ok_or(CtlError::UnknownCommand {
                command: verb.to_string(),
            })?;
            resource::run_verb(verb, &ds, &a, rest, stdin).await
        }
        "completion" => completion::run(&a, rest),
        "what-if" => whatif::run(ctl, &args, stdin).await,
        other => Err(CtlError::UnknownCommand {
            command: other.to_string(),
        }),
    }
}

/// Answers what needs no datastore: help (`-h`, `--help`, `help <command>`), `completion` and
/// `version`. `Ok(None)` for every other command line.
///
/// # Errors
/// As [`run`], for the lines it answers.
pub fn run_offline(args: &[String]) -> Result<Option<String>, CtlError> {
    if let Some(text) = help::requested(args)? {
        return Ok(Some(text));
    }
    let a = Args::parse(args)?;
    let words = a.words();
    match words.split_first() {
        Some((&"completion", rest)) => completion::run(&a, rest).map(Some),
        Some((&"version", rest)) => misc::version(&a, rest).map(Some),
        None if a.flag("version") => misc::version(&a, &[]).map(Some),
        Some((cmd, _)) if grammar::command(cmd).is_none() => Err(CtlError::UnknownCommand {
            command: (*cmd).to_string(),
        }),
        _ => Ok(None),
    }
}

/// A lenient listing's items and broken records; with `--strict`, the first broken record
/// fails the command instead (naming its key).
pub(crate) fn lenient<T>(
    a: &Args,
    listing: calico_backends::Listing<T>,
) -> Result<(T, Vec<calico_backends::BrokenRecord>), CtlError> {
    if a.flag("strict") {
        return Ok((listing.strict()?, Vec::new()));
    }
    Ok((listing.items, listing.broken))
}

/// Fails when positionals remain after a command's grammar was matched.
pub(crate) fn no_more(rest: &[&str]) -> Result<(), CtlError> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => Err(CtlError::UnexpectedArgument {
            arg: (*arg).to_string(),
        }),
    }
}
