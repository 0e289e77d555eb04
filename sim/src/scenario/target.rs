//! [`ScenarioTarget`]: where scenario lines run — the simulator's [`super::Runner`] or real
//! network namespaces (`crate::linux::LinuxRunner`). Both share the line loop and the rule
//! that decides a `$` / `$!` command line.

use async_trait::async_trait;

use super::parse::Line;
use super::run::{LineReport, ScenarioError};

/// A cluster that runs scenario lines one at a time.
#[async_trait(?Send)]
pub trait ScenarioTarget {
    /// Runs one line and returns its detail (calicoctl's output, what settled, the verdict).
    ///
    /// # Errors
    /// `ScenarioError` naming the line when it is unmet.
    async fn step(&mut self, line: &Line) -> Result<String, ScenarioError>;

    /// Runs every line in order, calling `report` after each; stops at the first unmet line.
    ///
    /// # Errors
    /// The first unmet line's error.
    async fn run<F: FnMut(&LineReport)>(
        &mut self,
        lines: &[Line],
        mut report: F,
    ) -> Result<(), ScenarioError> {
        for line in lines {
            let detail = self.step(line).await?;
            report(&LineReport {
                line: line.number,
                text: line.text.clone(),
                detail,
            });
        }
        Ok(())
    }
}

/// Whether a command line is met: `$` lines must succeed, `$!` lines must fail. Returns the
/// detail to print, or why the line is unmet.
pub fn command_outcome(succeeded: bool, must_fail: bool, text: &str) -> Result<String, String> {
    match (succeeded, must_fail) {
        (true, false) => Ok(text.to_string()),
        (false, true) => Ok(format!("failed as expected: {text}")),
        (true, true) => Err(format!("succeeded but should have failed: {text}")),
        (false, false) => Err(format!("failed: {text}")),
    }
}
