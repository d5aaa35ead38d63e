//! The leaderboard: a row per model × method grouped by base model (the dense row first),
//! the costs the run measured, the quality and each task's headline metric with the Δ vs the
//! base's dense row and its significance. The page sorts (within each base) and filters it in
//! the browser.
use crate::baseline::{Base, RowDeltas};
use crate::metric::{self, fmt_measure, fmt_value, COST_AXES};
use crate::rows::Rows;
use crate::table::{mark_best, Cell, Delta, Style};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Leaderboard {
    pub header: Vec<Column>,
    pub groups: Vec<Group>,
    pub rows: usize,
}

/// The rows of one base model.
#[derive(Debug, Serialize)]
pub struct Group {
    pub base: String,
    pub rows: Vec<LeaderRow>,
}

#[derive(Debug, Serialize)]
pub struct Column {
    pub text: String,
    /// Tooltip.
    pub title: String,
    /// Sorted as numbers.
    pub numeric: bool,
}

#[derive(Debug, Serialize)]
pub struct LeaderRow {
    /// The base's dense row.
    pub reference: bool,
    pub cells: Vec<Cell>,
}

pub fn leaderboard(rows: &Rows, bases: &[Base], deltas: &[Option<RowDeltas>]) -> Leaderboard {
    let costs: Vec<_> = COST_AXES
        .iter()
        .filter(|a| rows.rows.iter().any(|r| r.cost(a.measure).is_some()))
        .collect();
    let quality_higher = rows.quality_higher_is_better();
    let mut header = vec![Column {
        text: "method".into(),
        title: "Method label as in the suite; rows are compared with their base model's dense row"
            .into(),
        numeric: false,
    }];
    header.extend(costs.iter().map(|a| Column {
        text: a.short.into(),
        title: a.title.into(),
        numeric: true,
    }));
    header.push(Column {
        text: format!(
            "{}{}",
            rows.quality_title(),
            metric::arrow(Some(quality_higher))
        ),
        title: "The quality on the charts' y axis; under it, Δ vs the dense row (* significant at \
                p < 0.05, two-sided)"
            .into(),
        numeric: true,
    });
    header.extend(rows.headlines.iter().map(|h| Column {
        text: format!(
            "{} {}{}",
            h.task,
            metric::short_name(&h.metric),
            metric::arrow(h.higher_is_better)
        ),
        title: format!(
            "{}: value ± 1.96·stderr; under it, Δ vs the dense row",
            h.metric
        ),
        numeric: true,
    }));

    let mut groups: Vec<Group> = Vec::new();
    for base in bases {
        let mut out_rows: Vec<LeaderRow> = Vec::new();
        let versus = base
            .reference
            .map(|r| rows.rows[r].label())
            .unwrap_or_default();
        for &i in &base.rows {
            let row = &rows.rows[i];
            let d = deltas[i].as_ref();
            let label = match base.models.len() {
                1 => row.method_label.to_owned(),
                _ => row.label(),
            };
            let mut cells = vec![Cell::label(label)];
            cells.extend(costs.iter().map(|a| match row.cost(a.measure) {
                Some(v) => Cell::value(fmt_measure(a.measure, v), v),
                None => Cell::missing(),
            }));
            cells.push(
                quality_cell(rows, row).with_delta(
                    d.and_then(|d| d.quality.as_ref())
                        .map(|t| Delta::of(t, Some(quality_higher), &versus)),
                ),
            );
            cells.extend(rows.headlines.iter().enumerate().map(|(h, headline)| {
                match row.metric(&headline.task, &headline.metric) {
                    Some(r) => Cell::with_interval(r.value, r.stderr).with_delta(
                        d.and_then(|d| d.headlines[h].as_ref())
                            .map(|t| Delta::of(t, headline.higher_is_better, &versus)),
                    ),
                    None => Cell::missing(),
                }
            }));
            out_rows.push(LeaderRow {
                reference: Some(i) == base.reference,
                cells,
            });
        }
        // The best of each quality column within the base (costs are not ranked).
        let group = &mut out_rows[..];
        let quality_column = 1 + costs.len();
        let directions = std::iter::once(Some(quality_higher))
            .chain(rows.headlines.iter().map(|h| h.higher_is_better));
        for (offset, higher) in directions.enumerate() {
            let c = quality_column + offset;
            let values: Vec<Option<f64>> = group.iter().map(|r| r.cells[c].sort).collect();
            let mut cells: Vec<&mut Cell> = group.iter_mut().map(|r| &mut r.cells[c]).collect();
            mark_best(&mut cells, &values, higher, &|v| fmt_value(v));
        }
        groups.push(Group {
            base: base.name.clone(),
            rows: out_rows,
        });
    }
    Leaderboard {
        header,
        rows: groups.iter().map(|g| g.rows.len()).sum(),
        groups,
    }
}

/// The quality of a row: its value, or for an accuracy average over fewer tasks than the
/// others, the partial average and its task count (not sorted or ranked with the others).
fn quality_cell(rows: &Rows, row: &crate::rows::RowNumbers) -> Cell {
    if let Some((q, _)) = rows.quality_of(row) {
        return Cell::value(fmt_value(q), q);
    }
    let of = rows.accuracy_headlines().len();
    match (&rows.quality, rows.average(row)) {
        (crate::rows::Quality::Average(_), Some(a)) => Cell::styled(
            format!("{} ({}/{of} tasks)", fmt_value(a.value), a.tasks),
            Style::Num,
        ),
        _ => Cell::missing(),
    }
}
