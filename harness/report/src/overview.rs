//! The report's first screen: per base model, quality against each cost the run measured
//! (one large chart per cost axis, the axis picked in the page), the base's dense row as the
//! reference point, a ranking with Δ vs that row, and hypervolumes in a table with their
//! reference point. Also the suite's own Pareto plots (`report.pareto`), likewise per base.
use crate::baseline::{Base, RowDeltas};
use crate::metric::{self, fmt_measure, fmt_value, CostAxis, COST_AXES};
use crate::rows::{RowNumbers, Rows};
use crate::svg::{hypervolume, scatter, Axis, Point, Scatter, LARGE, SMALL};
use crate::table::{Cell, Delta, Style, Table};
use moebench_suite::suite::ParetoAxes;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Overview {
    /// The cost axes some base has, in selector order.
    pub axes: Vec<AxisChoice>,
    /// The axis shown first: the first that separates the rows of the most bases.
    pub default_axis: &'static str,
    pub bases: Vec<BaseView>,
    /// What the y axes show.
    pub quality: String,
}

#[derive(Debug, Serialize)]
pub struct AxisChoice {
    pub measure: &'static str,
    pub short: &'static str,
    pub title: &'static str,
}

#[derive(Debug, Serialize)]
pub struct BaseView {
    /// An HTML id.
    pub id: String,
    pub name: String,
    pub summary: String,
    /// One per cost axis the base has, in selector order.
    pub views: Vec<View>,
    /// The view shown without the page's script: the default axis, else the base's first.
    pub first_axis: &'static str,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct View {
    pub axis: &'static str,
    /// Whether the rows differ on this axis.
    #[serde(skip)]
    pub varies: bool,
    pub chart: Scatter,
    pub ranking: Table,
    pub hypervolume: Option<Hypervolumes>,
}

/// Hypervolume per method, with the reference point stated.
#[derive(Debug, Serialize)]
pub struct Hypervolumes {
    pub reference: String,
    pub table: Table,
}

/// The overview of every base.
pub fn overview(rows: &Rows, bases: &[Base], deltas: &[Option<RowDeltas>]) -> Overview {
    let quality = rows.quality_title();
    let mut views: Vec<BaseView> = bases
        .iter()
        .enumerate()
        .map(|(b, base)| base_view(rows, base, b, deltas))
        .collect();
    let axes: Vec<AxisChoice> = COST_AXES
        .iter()
        .filter(|a| {
            views
                .iter()
                .any(|b| b.views.iter().any(|v| v.axis == a.measure))
        })
        .map(|a| AxisChoice {
            measure: a.measure,
            short: a.short,
            title: a.title,
        })
        .collect();
    let separating = |axis: &str| {
        views
            .iter()
            .filter(|b| b.views.iter().any(|v| v.axis == axis && v.varies))
            .count()
    };
    // The first of the axes that separate the rows of the most bases.
    let default_axis = axes
        .iter()
        .rev()
        .max_by_key(|a| separating(a.measure))
        .map_or("", |a| a.measure);
    for base in &mut views {
        base.first_axis = match base.views.iter().any(|v| v.axis == default_axis) {
            true => default_axis,
            false => base.views.first().map_or("", |v| v.axis),
        };
    }
    Overview {
        axes,
        default_axis,
        bases: views,
        quality,
    }
}

/// A point's label: the method, or `model/method` when a base groups several models.
fn point_label(base: &Base, row: &RowNumbers) -> String {
    if base.models.len() > 1 {
        row.label()
    } else {
        row.method_label.to_owned()
    }
}

fn base_view(rows: &Rows, base: &Base, b: usize, deltas: &[Option<RowDeltas>]) -> BaseView {
    let quality_title = rows.quality_title();
    let higher = rows.quality_higher_is_better();
    let with_quality: Vec<(usize, f64)> = base
        .rows
        .iter()
        .filter_map(|&i| rows.quality_of(&rows.rows[i]).map(|(q, _)| (i, q)))
        .collect();
    let mut notes = Vec::new();
    let missing = base.rows.len() - with_quality.len();
    if missing > 0 {
        notes.push(format!(
            "{missing} row{} without every task of the {quality_title} {} not plotted.",
            if missing == 1 { "" } else { "s" },
            if missing == 1 { "is" } else { "are" },
        ));
    }
    if base.reference.is_none() {
        notes.push("No dense row of this base model ran: no reference point and no Δ.".into());
    }
    let views = COST_AXES
        .iter()
        .filter_map(|axis| {
            let points: Vec<(usize, Point)> = with_quality
                .iter()
                .filter_map(|&(i, q)| {
                    let row = &rows.rows[i];
                    row.cost(axis.measure).map(|x| {
                        let point = Point {
                            label: point_label(base, row),
                            x,
                            y: q,
                            reference: Some(i) == base.reference,
                        };
                        (i, point)
                    })
                })
                .collect();
            (!points.is_empty()).then(|| {
                let just_points: Vec<Point> = points.iter().map(|(_, p)| p.clone()).collect();
                let fmt_cost = |v: f64| fmt_measure(axis.measure, v);
                View {
                    axis: axis.measure,
                    varies: just_points.iter().any(|p| p.x != just_points[0].x),
                    chart: scatter(
                        &format!("{}: {quality_title} vs {}", base.name, axis.title),
                        Axis {
                            title: axis.title,
                            fmt: &fmt_cost,
                            higher_is_better: false,
                        },
                        Axis {
                            title: &quality_title,
                            fmt: &fmt_value,
                            higher_is_better: higher,
                        },
                        &just_points,
                        LARGE,
                    ),
                    ranking: ranking(rows, base, axis, &with_quality, deltas),
                    hypervolume: (just_points.len() >= 2).then(|| {
                        normalized_hypervolumes(&just_points, axis, &quality_title, higher)
                    }),
                }
            })
        })
        .collect();
    BaseView {
        id: format!("base-{b}"),
        name: base.name.clone(),
        summary: summary(rows, base, &quality_title),
        views,
        first_axis: "",
        notes,
    }
}

/// `dense: accuracy avg 0.4312 · active params 134.5M · 12 rows`.
fn summary(rows: &Rows, base: &Base, quality_title: &str) -> String {
    let count = format!(
        "{} row{}",
        base.rows.len(),
        if base.rows.len() == 1 { "" } else { "s" }
    );
    let Some(r) = base.reference else {
        return count;
    };
    let row = &rows.rows[r];
    let mut parts = vec![format!("reference: {} (diamond)", point_label(base, row))];
    if let Some((q, _)) = rows.quality_of(row) {
        parts.push(format!("{quality_title} {}", fmt_value(q)));
    }
    for axis in COST_AXES.iter().take(3) {
        if let Some(v) = row.cost(axis.measure) {
            parts.push(format!("{} {}", axis.short, fmt_measure(axis.measure, v)));
        }
    }
    parts.push(count);
    parts.join(" · ")
}

/// The base's rows by quality, better first: quality, Δ vs the dense row, the axis' cost and
/// its ratio to the dense row's.
fn ranking(
    rows: &Rows,
    base: &Base,
    axis: &CostAxis,
    with_quality: &[(usize, f64)],
    deltas: &[Option<RowDeltas>],
) -> Table {
    let higher = rows.quality_higher_is_better();
    let mut order: Vec<(usize, f64)> = with_quality.to_vec();
    order.sort_by(|a, b| {
        let (a, b) = if higher { (b.1, a.1) } else { (a.1, b.1) };
        a.total_cmp(&b)
    });
    let reference_cost = base.reference.and_then(|r| rows.rows[r].cost(axis.measure));
    let versus = base
        .reference
        .map(|r| point_label(base, &rows.rows[r]))
        .unwrap_or_default();
    let table_rows = order
        .iter()
        .map(|&(i, q)| {
            let row = &rows.rows[i];
            let is_reference = Some(i) == base.reference;
            let mut label = Cell::label(point_label(base, row));
            if is_reference {
                label.style = Style::Ref;
                label.title = Some("the reference: this base model's dense row".into());
            }
            let tested = deltas[i].as_ref().and_then(|d| d.quality.as_ref());
            let delta_cell = match tested {
                Some(t) => {
                    let d = Delta::of(t, Some(higher), &versus);
                    Cell::value("", t.delta).with_delta(Some(d))
                }
                None if is_reference => Cell::styled("reference", Style::Missing),
                None => Cell::missing(),
            };
            let cost = row.cost(axis.measure);
            let ratio = cost
                .zip(reference_cost.filter(|r| *r > 0.0))
                .map(|(c, r)| c / r);
            let cost = cost.map_or_else(Cell::missing, |c| Cell {
                note: ratio.map(|r| format!("{r:.2}×")),
                ..Cell::value(fmt_measure(axis.measure, c), c)
            });
            vec![label, Cell::value(fmt_value(q), q), delta_cell, cost]
        })
        .collect();
    Table {
        header: vec![
            "method".into(),
            "quality".into(),
            format!("Δ vs {}", if versus.is_empty() { "dense" } else { &versus }),
            format!("{} (× dense)", axis.short),
        ],
        rows: table_rows,
    }
}

/// Oriented so that higher is better.
fn orient(v: f64, higher_is_better: bool) -> f64 {
    if higher_is_better {
        v
    } else {
        -v
    }
}

/// Points grouped by method family (the label without its `[…]` sweep values), in order.
fn families(points: &[Point]) -> Vec<(String, Vec<&Point>)> {
    let mut groups: Vec<(String, Vec<&Point>)> = Vec::new();
    for p in points {
        let family = p.label.split('[').next().unwrap_or(&p.label).to_owned();
        match groups.iter_mut().find(|(f, _)| *f == family) {
            Some((_, v)) => v.push(p),
            None => groups.push((family, vec![p])),
        }
    }
    groups
}

/// Hypervolume per method family and of all points, with both axes scaled to [0, 1] between
/// the chart's worst and best values (so that a FLOPs axis and an accuracy axis weigh the
/// same) and the reference point 10% of each range beyond the worst values.
fn normalized_hypervolumes(
    points: &[Point],
    axis: &CostAxis,
    quality_title: &str,
    quality_higher: bool,
) -> Hypervolumes {
    let scale = |values: Vec<f64>| {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let range = if hi > lo {
            hi - lo
        } else {
            lo.abs().max(1e-12)
        };
        (lo, range)
    };
    let (x_lo, x_range) = scale(points.iter().map(|p| orient(p.x, false)).collect());
    let (y_lo, y_range) = scale(points.iter().map(|p| orient(p.y, quality_higher)).collect());
    let normalized = |p: &Point| {
        (
            (orient(p.x, false) - x_lo) / x_range,
            (orient(p.y, quality_higher) - y_lo) / y_range,
        )
    };
    let reference = (-0.1, -0.1);
    let mut rows: Vec<(String, usize, f64)> = families(points)
        .into_iter()
        .map(|(family, members)| {
            let n: Vec<(f64, f64)> = members.iter().map(|p| normalized(p)).collect();
            (family, members.len(), hypervolume(&n, reference))
        })
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    let all: Vec<(f64, f64)> = points.iter().map(normalized).collect();
    rows.push((
        "all rows (front)".into(),
        points.len(),
        hypervolume(&all, reference),
    ));
    let x_ref = orient(x_lo - 0.1 * x_range, false);
    let y_ref = orient(y_lo - 0.1 * y_range, quality_higher);
    Hypervolumes {
        reference: format!(
            "Both axes scaled to [0, 1] between the worst and best values on this chart; \
             reference point 10% of each range beyond the worst: {} = {}, {quality_title} = {}. \
             1.21 would be one point at the best of both.",
            axis.short,
            fmt_measure(axis.measure, x_ref),
            fmt_value(y_ref)
        ),
        table: hv_table(rows),
    }
}

fn hv_table(rows: Vec<(String, usize, f64)>) -> Table {
    Table {
        header: vec!["method".into(), "points".into(), "hypervolume".into()],
        rows: rows
            .into_iter()
            .map(|(family, n, hv)| {
                vec![
                    Cell::label(family),
                    Cell::value(n.to_string(), n as f64),
                    Cell::value(format!("{hv:.3}"), hv),
                ]
            })
            .collect(),
    }
}

/// One of the suite's own Pareto plots for one base.
#[derive(Debug, Serialize)]
pub struct SuitePlot {
    pub base: String,
    pub chart: Scatter,
    pub hypervolume: Option<Hypervolumes>,
}

/// The number an axis of `report.pareto` names for one row — a measure, or a task metric
/// written `task/metric` — with its direction.
fn axis_value(row: &RowNumbers, axis: &str) -> Option<(f64, bool)> {
    let record = match axis.split_once('/') {
        Some((task, metric)) => row.metric(task, metric),
        None => row.measure(axis),
    }?;
    Some((
        record.value,
        metric::higher_is_better(record).unwrap_or(true),
    ))
    .filter(|(v, _)| v.is_finite())
}

/// The suite's own Pareto plots (`report.pareto`), one chart per pair of axes and base model,
/// each point a row that has both numbers; per method family with several points (a sweep),
/// the hypervolume as in REAM's comparison of calibration mixes (§8.7: raw axes, reference
/// one unit below the minima of all points).
pub fn suite_plots(rows: &Rows, bases: &[Base], pareto: &[ParetoAxes]) -> Vec<SuitePlot> {
    let mut out = Vec::new();
    for axes in pareto {
        for base in bases {
            let mut directions = (true, true);
            let points: Vec<Point> = base
                .rows
                .iter()
                .filter_map(|&i| {
                    let row = &rows.rows[i];
                    let (x, x_higher) = axis_value(row, &axes.x)?;
                    let (y, y_higher) = axis_value(row, &axes.y)?;
                    directions = (x_higher, y_higher);
                    Some(Point {
                        label: point_label(base, row),
                        x,
                        y,
                        reference: Some(i) == base.reference,
                    })
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let fmt_x = |v: f64| match axes.x.contains('/') {
                true => fmt_value(v),
                false => fmt_measure(&axes.x, v),
            };
            let fmt_y = |v: f64| match axes.y.contains('/') {
                true => fmt_value(v),
                false => fmt_measure(&axes.y, v),
            };
            out.push(SuitePlot {
                base: base.name.clone(),
                chart: scatter(
                    &format!("{}: {} vs {}", base.name, axes.y, axes.x),
                    Axis {
                        title: &axes.x,
                        fmt: &fmt_x,
                        higher_is_better: directions.0,
                    },
                    Axis {
                        title: &axes.y,
                        fmt: &fmt_y,
                        higher_is_better: directions.1,
                    },
                    &points,
                    SMALL,
                ),
                hypervolume: ream_hypervolumes(&points, directions, axes),
            });
        }
    }
    out
}

/// REAM's hypervolume per method family; `None` when no family has two points.
fn ream_hypervolumes(
    points: &[Point],
    (x_higher, y_higher): (bool, bool),
    axes: &ParetoAxes,
) -> Option<Hypervolumes> {
    let groups = families(points);
    if groups.iter().all(|(_, v)| v.len() < 2) {
        return None;
    }
    let oriented = |p: &Point| (orient(p.x, x_higher), orient(p.y, y_higher));
    let all: Vec<(f64, f64)> = points.iter().map(oriented).collect();
    let reference = (
        all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) - 1.0,
        all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min) - 1.0,
    );
    let rows = groups
        .into_iter()
        .map(|(family, members)| {
            let o: Vec<(f64, f64)> = members.iter().map(|p| oriented(p)).collect();
            (family, members.len(), hypervolume(&o, reference))
        })
        .collect();
    Some(Hypervolumes {
        reference: format!(
            "Raw axes, reference point one unit below the minima of all points (REAM §8.7): \
             {} = {}, {} = {}.",
            axes.x,
            fmt_value(orient(reference.0, x_higher)),
            axes.y,
            fmt_value(orient(reference.1, y_higher)),
        ),
        table: hv_table(rows),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(label: &str, x: f64, y: f64) -> Point {
        Point {
            label: label.into(),
            x,
            y,
            reference: false,
        }
    }

    #[test]
    fn normalized_hypervolume_of_two_methods() {
        // Cost lower is better, accuracy higher. Normalized: a = (1, 0), b = (0, 1) (worst
        // cost, best accuracy); c = (0.5, 0.5) with the reference at (−0.1, −0.1).
        let points = [
            point("a", 1.0, 0.4),
            point("b", 3.0, 0.6),
            point("c[x=1]", 2.0, 0.5),
        ];
        let axis = &COST_AXES[1];
        assert_eq!(axis.measure, "flops_per_token");
        let hv = normalized_hypervolumes(&points, axis, "acc", true);
        let value = |name: &str| {
            let row = hv.table.rows.iter().find(|r| r[0].text == name).unwrap();
            row[2].sort.unwrap()
        };
        assert!((value("a") - 1.1 * 0.1).abs() < 1e-12);
        assert!((value("b") - 0.1 * 1.1).abs() < 1e-12);
        assert!((value("c") - 0.6 * 0.6).abs() < 1e-12);
        // All three: 1.1·0.1 + 0.6·0.5 + 0.1·0.5 = 0.46.
        assert!((value("all rows (front)") - 0.46).abs() < 1e-12);
        assert!(
            hv.reference.contains("FLOPs/token = 3.2"),
            "{}",
            hv.reference
        );
        assert!(hv.reference.contains("acc = 0.3800"), "{}", hv.reference);
        // Best first, the front last.
        assert_eq!(hv.table.rows[0][0].text, "c");
    }
}
