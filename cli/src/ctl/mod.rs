//! calicoctl: the v1 command set (reference section 2) over a [`Ctl`] context.
//!
//! - [`run`] / [`run_with_input`]: the entry point; parse the argument vector ([`args`]),
//!   dispatch on the first word to one module per command, return what to print.
//! - `node`, `pool`, `container`, `endpoint`, `profile` (+ `rule_syntax`), `bgp`, `misc`
//!   (ipam, config, version), `checksystem`.
//! - [`output`]: aligned tables and JSON; [`CtlError`]: every failure, naming the object.
//! - [`host_env`]: the real machine's resolver, hostname and the placeholders for the Linux
//!   dataplane and node launcher that land later.

pub mod args;
mod bgp;
mod checksystem;
mod container;
mod context;
mod diags;
mod docker;
mod endpoint;
mod error;
pub mod host_env;
mod ids;
mod misc;
mod node;
pub mod output;
mod pool;
mod profile;
mod rule_syntax;

use calico_backends::Datastore;

pub use args::Args;
pub use context::{
    BgpPeerStatus, Ctl, DiagFile, NodeControl, NodeStartOptions, NodeStatus, Workload,
    WorkloadResolver,
};
pub use error::CtlError;
pub use node::detect_ipv4;

/// The usage summary `calicoctl help` prints.
pub const USAGE: &str = "\
Usage: calicoctl [-o json] <command> [<args>...]

    node            Configure the main calico/node container and BGP peers
    status          Print current status information
    container       Configure containers and their addresses
    profile         Configure endpoint profiles
    endpoint        Configure the endpoints assigned to existing containers
    pool            Configure ip-pools
    bgp             Configure global BGP options
    ipam            Configure IP address management
    checksystem     Check for incompatibilities on the host system
    config          Configure low-level component configuration
    version         Display the version of calicoctl
";

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
    let a = Args::parse(args)?;
    let ds = Datastore::new(ctl.store.clone());
    let words = a.words();
    let (cmd, rest) = match words.split_first() {
        Some((cmd, rest)) => (*cmd, rest),
        None if a.flag("version") => ("version", &[][..]),
        None => return Ok(USAGE.to_string()),
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
        "help" | "-h" => Ok(USAGE.to_string()),
        other => Err(CtlError::UnknownCommand {
            command: other.to_string(),
        }),
    }
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
