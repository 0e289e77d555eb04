//! `-o svg=FILE`: the reachability matrix of the endpoints whose flows change, before and
//! after side by side (plotters' SVG backend). A cell is green when every probe of that
//! source → destination pair passes, grey when none does, amber when some do; a changed cell
//! has a thick red border.

use std::path::Path;

use plotters::prelude::*;

use super::report::{Cell, Matrix};
use super::{Report, WhatIfError};

const CELL: i32 = 18;
const LABEL_WIDTH: i32 = 160;
const TOP: i32 = 40;
const GAP: i32 = 40;

/// Draws `report`'s matrix into `path`.
///
/// # Errors
/// Writing the file.
pub fn draw(report: &Report, path: &Path) -> Result<(), WhatIfError> {
    let failed = |e: &dyn std::fmt::Display| WhatIfError::Svg {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let m = &report.matrix;
    let n = i32::try_from(m.labels.len()).unwrap_or(i32::MAX / 64 / CELL);
    let panel = n * CELL;
    let width = LABEL_WIDTH + 2 * panel + GAP + 20;
    let height = TOP + panel + LABEL_WIDTH.min(120) + 30;
    let size = (
        u32::try_from(width.max(400)).unwrap_or(400),
        u32::try_from(height).unwrap_or(200),
    );
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let font = ("sans-serif", 12).into_font();
    let title = format!("calicoctl what-if -- {}", report.command.join(" "));
    root.draw(&Text::new(title, (10, 8), font.clone()))
        .map_err(|e| failed(&e))?;
    if m.labels.is_empty() {
        root.draw(&Text::new("no flow changes", (10, TOP), font.clone()))
            .map_err(|e| failed(&e))?;
        return root.present().map_err(|e| failed(&e));
    }
    for (i, label) in m.labels.iter().enumerate() {
        let y = TOP + i32::try_from(i).unwrap_or(0) * CELL + 4;
        root.draw(&Text::new(label.clone(), (10, y), font.clone()))
            .map_err(|e| failed(&e))?;
    }
    for (panel_index, (name, before)) in [("before", true), ("after", false)].iter().enumerate() {
        let x0 = LABEL_WIDTH + i32::try_from(panel_index).unwrap_or(0) * (panel + GAP);
        root.draw(&Text::new(*name, (x0, TOP - 16), font.clone()))
            .map_err(|e| failed(&e))?;
        draw_panel(&root, m, x0, *before).map_err(|e| failed(&e))?;
        for (i, label) in m.labels.iter().enumerate() {
            let x = x0 + i32::try_from(i).unwrap_or(0) * CELL + 4;
            let text = Text::new(
                label.clone(),
                (x, TOP + panel + 4),
                font.clone().transform(FontTransform::Rotate90),
            );
            root.draw(&text).map_err(|e| failed(&e))?;
        }
    }
    root.present().map_err(|e| failed(&e))
}

fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    m: &Matrix,
    x0: i32,
    before: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = m.labels.len();
    for row in 0..n {
        for col in 0..n {
            let x = x0 + i32::try_from(col).unwrap_or(0) * CELL;
            let y = TOP + i32::try_from(row).unwrap_or(0) * CELL;
            let corners = [(x, y), (x + CELL - 1, y + CELL - 1)];
            let cell = m.cells.get(&(row, col));
            root.draw(&Rectangle::new(corners, fill(cell, before).filled()))?;
            if cell.is_some_and(|c| c.changed) {
                root.draw(&Rectangle::new(corners, RED.stroke_width(3)))?;
            }
        }
    }
    Ok(())
}

fn fill(cell: Option<&Cell>, before: bool) -> RGBColor {
    let Some(cell) = cell else {
        return WHITE;
    };
    let allowed = if before {
        cell.allowed_before
    } else {
        cell.allowed_after
    };
    if allowed == cell.probes {
        RGBColor(76, 175, 80)
    } else if allowed == 0 {
        RGBColor(200, 200, 200)
    } else {
        RGBColor(255, 193, 7)
    }
}
