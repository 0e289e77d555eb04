//! `-o svg=FILE`: the before/after reachability matrix of the endpoints whose flows changed.

use std::path::Path;

use super::{Report, WhatIfError};

/// Draws `report`'s changed flows into `path`.
///
/// # Errors
/// Writing the file.
pub fn draw(report: &Report, path: &Path) -> Result<(), WhatIfError> {
    let _ = report;
    Err(WhatIfError::Svg {
        path: path.display().to_string(),
        reason: "not built yet".into(),
    })
}
