//! Scenario files (`SCENARIOS.md` at the repository root): a small cluster's life as calicoctl commands per host,
//! then what must be reachable. Parsed by [`parse()`], run on the simulator by [`Runner`], with
//! calicoctl's own command code ([`calico_cli::ctl::run`]) against each simulated host.

mod host_env;
pub mod parse;
mod run;
mod target;

pub use host_env::{NodeRequests, SimNodeControl, SimResolver};
pub use parse::{parse, Line, ParseError, Step};
pub use run::{LineReport, Runner, ScenarioError};
pub use target::{command_outcome, ScenarioTarget};
