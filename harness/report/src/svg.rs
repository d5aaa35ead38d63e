//! Geometry of the report's inline SVG charts: axes and ticks, Pareto scatter plots, trend
//! lines and heatmaps. Everything is in pixels here; `reports/partials/*.html` draws it.
use serde::Serialize;

const WIDTH: f64 = 580.0;
const HEIGHT: f64 = 340.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 52.0;

/// Series colours (colour-blind safe, Okabe–Ito).
const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#f0e442", "#000000",
];

#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Pixel position along the axis.
    pub pos: f64,
    pub label: String,
}

/// The plot area and its axes.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub x_label: String,
    pub y_label: String,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dot {
    pub x: f64,
    pub y: f64,
    pub label: String,
    /// Where the label starts (or ends, see `anchor`): beside the dot, towards the plot's centre.
    pub label_x: f64,
    /// SVG `text-anchor` of the label.
    pub anchor: &'static str,
    /// Tooltip.
    pub title: String,
    pub front: bool,
}

/// A scatter plot whose Pareto-optimal points are highlighted and joined.
#[derive(Debug, Clone, Serialize)]
pub struct Scatter {
    pub title: String,
    pub frame: Frame,
    pub dots: Vec<Dot>,
    /// SVG `points` of the line through the front.
    pub front: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub label: String,
    pub color: &'static str,
    pub points: String,
    pub dots: Vec<Dot>,
}

/// Lines over ordered categories (runs).
#[derive(Debug, Clone, Serialize)]
pub struct LineChart {
    pub title: String,
    pub frame: Frame,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub x: f64,
    pub y: f64,
    pub fill: String,
    pub title: String,
}

/// Rows × columns of shaded cells.
#[derive(Debug, Clone, Serialize)]
pub struct Heatmap {
    pub title: String,
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub top: f64,
    pub cell_w: f64,
    pub cell_h: f64,
    pub cells: Vec<Cell>,
    pub row_ticks: Vec<Tick>,
    pub col_ticks: Vec<Tick>,
}

/// Maps data values to pixels, linearly or on a log scale.
#[derive(Debug, Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    px_lo: f64,
    px_hi: f64,
}

impl Scale {
    /// A padded domain around `values` (log when all are positive and span ≥ 20×).
    fn fit(values: &[f64], px_lo: f64, px_hi: f64) -> Self {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log = lo > 0.0 && hi / lo >= 20.0;
        let (a, b) = if log {
            (lo.log10(), hi.log10())
        } else {
            (lo, hi)
        };
        let pad = if b > a {
            (b - a) * 0.08
        } else {
            a.abs().max(1.0) * 0.1
        };
        let (a, b) = (a - pad, b + pad);
        let (lo, hi) = if log {
            (10f64.powf(a), 10f64.powf(b))
        } else {
            (a, b)
        };
        Self {
            lo,
            hi,
            log,
            px_lo,
            px_hi,
        }
    }

    fn fraction(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn px(&self, v: f64) -> f64 {
        round(self.px_lo + self.fraction(v) * (self.px_hi - self.px_lo))
    }

    /// 1-2-5 ticks inside the domain, labelled with `fmt`.
    fn ticks(&self, fmt: &dyn Fn(f64) -> String) -> Vec<Tick> {
        let values = if self.log {
            log_ticks(self.lo, self.hi)
        } else {
            linear_ticks(self.lo, self.hi)
        };
        values
            .into_iter()
            .map(|v| Tick {
                pos: self.px(v),
                label: fmt(v),
            })
            .collect()
    }
}

fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // Dividing by a whole 1/step keeps 0.1-steps free of binary noise (0.6, not 0.6000000000000001).
    let at = |k: i64| {
        if step < 1.0 {
            k as f64 / (1.0 / step).round()
        } else {
            k as f64 * step
        }
    };
    (first..=last).map(at).collect()
}

fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = lo.log10().floor() as i32..=hi.log10().ceil() as i32;
    let within = |mantissas: &[f64]| -> Vec<f64> {
        decades
            .clone()
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let fine = within(&[1.0, 2.0, 5.0]);
    if fine.len() <= 8 {
        fine
    } else {
        within(&[1.0])
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn frame(x_label: &str, y_label: &str, x_ticks: Vec<Tick>, y_ticks: Vec<Tick>) -> Frame {
    Frame {
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        right: WIDTH - RIGHT,
        top: TOP,
        bottom: HEIGHT - BOTTOM,
        x_label: x_label.to_owned(),
        y_label: y_label.to_owned(),
        x_ticks,
        y_ticks,
    }
}

/// Indices of the Pareto-optimal points — no other point is at least as good on both axes
/// and better on one — ordered along x; y is better high, x as `x_higher_is_better` says.
pub fn pareto_front(
    points: &[(f64, f64)],
    x_higher_is_better: bool,
    y_higher_is_better: bool,
) -> Vec<usize> {
    let sign = if y_higher_is_better { 1.0 } else { -1.0 };
    let oriented: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x, sign * y)).collect();
    let points = &oriented;
    let better_x = |i: usize| {
        if x_higher_is_better {
            -points[i].0
        } else {
            points[i].0
        }
    };
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        better_x(a)
            .total_cmp(&better_x(b))
            .then(points[b].1.total_cmp(&points[a].1))
    });
    let mut best = f64::NEG_INFINITY;
    let mut front: Vec<usize> = order
        .into_iter()
        .filter(|&i| {
            let on = points[i].1 > best;
            best = best.max(points[i].1);
            on
        })
        .collect();
    front.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0));
    front
}

/// 2-D hypervolume (area dominated) of `points` above `reference`, both axes oriented so that
/// higher is better (REAM's Pareto comparison over calibration mixes, §8.7: reference one unit
/// below the global minima).
pub fn hypervolume(points: &[(f64, f64)], reference: (f64, f64)) -> f64 {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|&(x, y)| x > reference.0 && y > reference.1)
        .collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut area = 0.0;
    let mut best_y = reference.1;
    for (x, y) in sorted {
        if y > best_y {
            area += (x - reference.0) * (y - best_y);
            best_y = y;
        }
    }
    area
}

/// One labelled point of a scatter plot.
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
}

/// A Pareto scatter plot of `points` (y better high).
pub fn scatter(
    title: &str,
    (x_label, fmt_x): (&str, &dyn Fn(f64) -> String),
    (y_label, fmt_y): (&str, &dyn Fn(f64) -> String),
    points: &[Point],
    x_higher_is_better: bool,
    y_higher_is_better: bool,
) -> Scatter {
    let xs: Vec<f64> = points.iter().map(|p| p.x).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.y).collect();
    let sx = Scale::fit(&xs, LEFT, WIDTH - RIGHT);
    let sy = Scale::fit(&ys, HEIGHT - BOTTOM, TOP);
    let pairs: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).collect();
    let front = pareto_front(&pairs, x_higher_is_better, y_higher_is_better);
    let dots = points
        .iter()
        .enumerate()
        .map(|(i, p)| Dot {
            title: format!(
                "{}: {} = {}, {} = {}",
                p.label,
                x_label,
                fmt_x(p.x),
                y_label,
                fmt_y(p.y)
            ),
            front: front.contains(&i),
            ..dot(sx.px(p.x), sy.px(p.y), &p.label)
        })
        .collect();
    Scatter {
        title: title.to_owned(),
        frame: frame(x_label, y_label, sx.ticks(fmt_x), sy.ticks(fmt_y)),
        dots,
        front: polyline(front.iter().map(|&i| (sx.px(xs[i]), sy.px(ys[i])))),
    }
}

/// A dot at pixel (x, y) whose label points inwards, so that it stays inside the plot.
fn dot(x: f64, y: f64, label: &str) -> Dot {
    let right_half = x > (LEFT + WIDTH - RIGHT) / 2.0;
    Dot {
        x,
        y,
        label: label.to_owned(),
        label_x: if right_half { x - 8.0 } else { x + 8.0 },
        anchor: if right_half { "end" } else { "start" },
        title: String::new(),
        front: false,
    }
}

fn polyline(points: impl Iterator<Item = (f64, f64)>) -> String {
    points
        .map(|(x, y)| format!("{x},{y}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lines of values over `categories` (x positions 0..n); each series has one optional value
/// per category.
pub fn line_chart(
    title: &str,
    categories: &[String],
    (y_label, fmt_y): (&str, &dyn Fn(f64) -> String),
    series: &[(String, Vec<Option<f64>>)],
) -> LineChart {
    let positions: Vec<f64> = (0..categories.len()).map(|i| i as f64).collect();
    // Positions start at 0, so this scale is linear.
    let sx = Scale::fit(&positions, LEFT, WIDTH - RIGHT);
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .collect();
    let sy = Scale::fit(&ys, HEIGHT - BOTTOM, TOP);
    let x_ticks = categories
        .iter()
        .enumerate()
        .map(|(i, c)| Tick {
            pos: sx.px(i as f64),
            label: c.clone(),
        })
        .collect();
    let series = series
        .iter()
        .enumerate()
        .map(|(k, (label, values))| {
            let dots: Vec<Dot> = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, v)))
                .map(|(i, v)| Dot {
                    title: format!("{label} @ {}: {}", categories[i], fmt_y(v)),
                    ..dot(sx.px(i as f64), sy.px(v), label)
                })
                .collect();
            Series {
                label: label.clone(),
                color: PALETTE[k % PALETTE.len()],
                points: polyline(dots.iter().map(|d| (d.x, d.y))),
                dots,
            }
        })
        .collect();
    LineChart {
        title: title.to_owned(),
        frame: frame("run", y_label, x_ticks, sy.ticks(fmt_y)),
        series,
    }
}

/// A heatmap of `rows` (each a list of non-negative values), shaded by value relative to the
/// largest; `tooltip(row, col, value)` describes a cell.
pub fn heatmap(
    title: &str,
    row_labels: &[String],
    rows: &[Vec<f64>],
    tooltip: &dyn Fn(usize, usize, f64) -> String,
) -> Heatmap {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let cell_w = round((720.0 / columns as f64).clamp(4.0, 28.0));
    let cell_h = round((480.0 / rows.len().max(1) as f64).clamp(6.0, 20.0));
    let (left, top) = (64.0, 24.0);
    let max = rows.iter().flatten().copied().fold(0.0, f64::max);
    let cells = rows
        .iter()
        .enumerate()
        .flat_map(|(r, values)| {
            values.iter().enumerate().map(move |(c, &v)| Cell {
                x: round(left + c as f64 * cell_w),
                y: round(top + r as f64 * cell_h),
                fill: shade(if max > 0.0 { v / max } else { 0.0 }),
                title: tooltip(r, c, v),
            })
        })
        .collect();
    let every = |n: usize, max_labels: usize| n.div_ceil(max_labels).max(1);
    let row_step = every(rows.len(), 24);
    let col_step = every(columns, 32);
    Heatmap {
        title: title.to_owned(),
        width: round(left + columns as f64 * cell_w + 16.0),
        height: round(top + rows.len() as f64 * cell_h + 8.0),
        left,
        top,
        cell_w,
        cell_h,
        cells,
        row_ticks: (0..rows.len())
            .step_by(row_step)
            .map(|r| Tick {
                pos: round(top + (r as f64 + 0.5) * cell_h),
                label: row_labels[r].clone(),
            })
            .collect(),
        col_ticks: (0..columns)
            .step_by(col_step)
            .map(|c| Tick {
                pos: round(left + (c as f64 + 0.5) * cell_w),
                label: c.to_string(),
            })
            .collect(),
    }
}

/// White to dark blue for `t` in [0, 1].
fn shade(t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    format!(
        "rgb({},{},{})",
        mix(247.0, 8.0),
        mix(251.0, 48.0),
        mix(255.0, 107.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_lower_x_higher_y() {
        // (cost, accuracy): 0 dominates 3; 1 and 2 trade off; 4 ties 2 on accuracy at a higher cost.
        let points = [(1.0, 0.5), (2.0, 0.6), (4.0, 0.7), (1.5, 0.4), (5.0, 0.7)];
        assert_eq!(pareto_front(&points, false, true), [0, 1, 2]);
        // Throughput: higher x is better, so only the fastest-and-best survive.
        assert_eq!(pareto_front(&points, true, true), [4]);
        assert!(pareto_front(&[], false, true).is_empty());
        // (cost, perplexity): lower is better on both axes.
        let ppl = [(1.0, 30.0), (2.0, 20.0), (3.0, 25.0)];
        assert_eq!(pareto_front(&ppl, false, false), [0, 1]);
    }

    #[test]
    fn hypervolume_of_a_staircase() {
        // Two non-dominated points and a dominated one above the reference (0, 0):
        // (3,1) and (1,2) cover 3·1 + 1·(2−1) = 4.
        assert_eq!(
            hypervolume(&[(3.0, 1.0), (1.0, 2.0), (1.0, 0.5)], (0.0, 0.0)),
            4.0
        );
        assert_eq!(hypervolume(&[], (0.0, 0.0)), 0.0);
    }

    #[test]
    fn ticks_are_round_and_inside() {
        assert_eq!(linear_ticks(0.27, 0.81), [0.4, 0.6, 0.8]);
        assert_eq!(linear_ticks(0.3, 0.8), [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]);
        assert_eq!(
            linear_ticks(0.0, 2500.0),
            [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0]
        );
        assert_eq!(log_ticks(8e7, 3e9), [1e8, 2e8, 5e8, 1e9, 2e9]);
        let s = Scale::fit(&[1e8, 1e10], 0.0, 100.0);
        assert!(s.log);
        assert!(s.px(1e8) > 0.0 && s.px(1e10) < 100.0);
        let flat = Scale::fit(&[0.5, 0.5], 0.0, 100.0);
        assert_eq!(flat.px(0.5), 50.0);
    }

    #[test]
    fn heatmap_shades_relative_to_the_maximum() {
        let rows = vec![vec![0.0, 2.0], vec![1.0, 1.0]];
        let labels = vec!["0".to_owned(), "1".to_owned()];
        let map = heatmap("t", &labels, &rows, &|r, c, v| format!("{r},{c}={v}"));
        assert_eq!(map.cells.len(), 4);
        assert_eq!(map.cells[0].fill, "rgb(247,251,255)");
        assert_eq!(map.cells[1].fill, "rgb(8,48,107)");
        assert_eq!(map.cells[3].title, "1,1=1");
    }
}
