//! Geometry of the report's inline SVG charts: axes and ticks, Pareto scatter plots (with a
//! reference point and labels placed so that they do not overlap), trend lines and heatmaps.
//! Everything is in pixels here; `reports/partials/charts.html` draws it.
use serde::Serialize;

/// Margins around the plot area, in pixels.
const LEFT: f64 = 76.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 52.0;

/// Width of a character of an 11 px label, generously (DejaVu Sans is wider than most faces).
const CHAR_WIDTH: f64 = 6.4;
const LABEL_HEIGHT: f64 = 12.0;

/// Series colours (colour-blind safe, Okabe–Ito).
const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#f0e442", "#000000",
];

/// Line styles, one per round through [`PALETTE`].
const DASHES: [&str; 3] = ["", "7 4", "2 3"];

/// A chart's outer size in pixels (the SVG scales down with the page).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    pub width: f64,
    pub height: f64,
}

/// The quality-vs-cost charts that open the report.
pub const LARGE: Size = Size {
    width: 800.0,
    height: 480.0,
};

/// Secondary charts, several to a row.
pub const SMALL: Size = Size {
    width: 600.0,
    height: 340.0,
};

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

/// A label placed beside its dot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    pub x: f64,
    pub y: f64,
    /// SVG `text-anchor`.
    pub anchor: &'static str,
    pub text: String,
}

/// How a scatter dot is drawn (a CSS class of the charts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DotKind {
    /// The reference row (a base model's dense row): a diamond, with cross-hair lines.
    Reference,
    /// On the Pareto front.
    Front,
    Dominated,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dot {
    pub x: f64,
    pub y: f64,
    pub kind: DotKind,
    /// Tooltip.
    pub title: String,
    /// `None` where no free place was left (the tooltip still names the dot).
    pub label: Option<Label>,
}

/// A point of a line chart.
#[derive(Debug, Clone, Serialize)]
pub struct Mark {
    pub x: f64,
    pub y: f64,
    pub title: String,
}

/// A scatter plot whose Pareto-optimal points are highlighted and joined.
#[derive(Debug, Clone, Serialize)]
pub struct Scatter {
    pub title: String,
    pub frame: Frame,
    pub dots: Vec<Dot>,
    /// SVG `points` of the line through the front.
    pub front: String,
    /// Pixel position of the reference point's cross-hair lines.
    pub reference: Option<(f64, f64)>,
    /// Where "better" lies, in the matching corner of the plot.
    pub better: Label,
    /// Dots left without a label.
    pub unlabelled: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub label: String,
    pub color: &'static str,
    /// SVG `stroke-dasharray` once the palette repeats (empty: solid).
    pub dash: &'static str,
    pub points: String,
    pub dots: Vec<Mark>,
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

    /// 1-2-5 ticks inside the domain, labelled with `fmt`; of neighbours that read the same
    /// (a format too coarse for the step) only the first is kept.
    fn ticks(&self, fmt: &dyn Fn(f64) -> String) -> Vec<Tick> {
        let values = if self.log {
            log_ticks(self.lo, self.hi)
        } else {
            linear_ticks(self.lo, self.hi)
        };
        let mut ticks: Vec<Tick> = Vec::new();
        for v in values {
            let label = fmt(v);
            if ticks.last().is_none_or(|t| t.label != label) {
                ticks.push(Tick {
                    pos: self.px(v),
                    label,
                });
            }
        }
        ticks
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

fn frame(
    size: Size,
    x_label: &str,
    y_label: &str,
    x_ticks: Vec<Tick>,
    y_ticks: Vec<Tick>,
) -> Frame {
    Frame {
        width: size.width,
        height: size.height,
        left: LEFT,
        right: size.width - RIGHT,
        top: TOP,
        bottom: size.height - BOTTOM,
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
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
    /// Drawn as the reference (see [`DotKind::Reference`]).
    pub reference: bool,
}

/// An axis of a scatter plot: its title, how its ticks read, which way is better.
pub struct Axis<'a> {
    pub title: &'a str,
    pub fmt: &'a dyn Fn(f64) -> String,
    pub higher_is_better: bool,
}

/// A Pareto scatter plot of `points`.
pub fn scatter(title: &str, x: Axis, y: Axis, points: &[Point], size: Size) -> Scatter {
    let area = Area {
        left: LEFT,
        right: size.width - RIGHT,
        top: TOP,
        bottom: size.height - BOTTOM,
    };
    let xs: Vec<f64> = points.iter().map(|p| p.x).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.y).collect();
    let sx = Scale::fit(&xs, area.left, area.right);
    let sy = Scale::fit(&ys, area.bottom, area.top);
    let pairs: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).collect();
    let front = pareto_front(&pairs, x.higher_is_better, y.higher_is_better);
    let pixels: Vec<(f64, f64)> = points.iter().map(|p| (sx.px(p.x), sy.px(p.y))).collect();
    let kind = |i: usize| match (points[i].reference, front.contains(&i)) {
        (true, _) => DotKind::Reference,
        (false, true) => DotKind::Front,
        (false, false) => DotKind::Dominated,
    };
    let better = better_corner(&area, x.higher_is_better, y.higher_is_better);
    let mut placer = LabelPlacer::new(area, &pixels);
    placer.occupy(label_box(&better));
    // Labels go to the reference first, then the front, then the rest.
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| kind(i) as u8);
    let mut labels: Vec<Option<Label>> = vec![None; points.len()];
    for i in order {
        labels[i] = placer.place(pixels[i], &points[i].label);
    }
    let unlabelled = labels.iter().filter(|l| l.is_none()).count();
    let dots = points
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (p, label))| Dot {
            x: pixels[i].0,
            y: pixels[i].1,
            kind: kind(i),
            title: format!(
                "{}: {} = {}, {} = {}",
                p.label,
                x.title,
                (x.fmt)(p.x),
                y.title,
                (y.fmt)(p.y)
            ),
            label,
        })
        .collect();
    Scatter {
        title: title.to_owned(),
        frame: frame(size, x.title, y.title, sx.ticks(x.fmt), sy.ticks(y.fmt)),
        dots,
        front: polyline(front.iter().map(|&i| pixels[i])),
        reference: points.iter().position(|p| p.reference).map(|i| pixels[i]),
        better,
        unlabelled,
    }
}

/// The plot area in pixels.
#[derive(Debug, Clone, Copy)]
struct Area {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

/// An axis-aligned box in pixels: left, top, right, bottom.
type Box2 = (f64, f64, f64, f64);

fn overlaps(a: Box2, b: Box2) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// The box a label's text covers (estimated from its length).
fn label_box(l: &Label) -> Box2 {
    let w = l.text.chars().count() as f64 * CHAR_WIDTH;
    let left = match l.anchor {
        "start" => l.x,
        "end" => l.x - w,
        _ => l.x - w / 2.0,
    };
    (left, l.y - LABEL_HEIGHT + 2.0, left + w, l.y + 2.0)
}

/// "better" with an arrow, in the corner of the plot where both axes are better.
fn better_corner(area: &Area, x_higher: bool, y_higher: bool) -> Label {
    let arrow = match (x_higher, y_higher) {
        (false, true) => "↖",
        (true, true) => "↗",
        (false, false) => "↙",
        (true, false) => "↘",
    };
    let (x, anchor) = if x_higher {
        (area.right - 8.0, "end")
    } else {
        (area.left + 8.0, "start")
    };
    let y = if y_higher {
        area.top + 16.0
    } else {
        area.bottom - 8.0
    };
    let text = if x_higher {
        format!("better {arrow}")
    } else {
        format!("{arrow} better")
    };
    Label { x, y, anchor, text }
}

/// Places labels beside dots where they overlap neither another label nor a dot, inside the
/// plot area: right, left, above, below, then the diagonals.
struct LabelPlacer {
    area: Area,
    taken: Vec<Box2>,
}

impl LabelPlacer {
    const DOT_RADIUS: f64 = 6.0;

    fn new(area: Area, dots: &[(f64, f64)]) -> Self {
        let r = Self::DOT_RADIUS;
        Self {
            area,
            taken: dots
                .iter()
                .map(|&(x, y)| (x - r, y - r, x + r, y + r))
                .collect(),
        }
    }

    fn occupy(&mut self, b: Box2) {
        self.taken.push(b);
    }

    fn place(&mut self, (x, y): (f64, f64), text: &str) -> Option<Label> {
        let gap = Self::DOT_RADIUS + 3.0;
        let candidates = [
            (x + gap, y + 4.0, "start"),
            (x - gap, y + 4.0, "end"),
            (x, y - gap, "middle"),
            (x, y + gap + LABEL_HEIGHT - 2.0, "middle"),
            (x + gap - 2.0, y - gap + 2.0, "start"),
            (x + gap - 2.0, y + gap + LABEL_HEIGHT - 4.0, "start"),
            (x - gap + 2.0, y - gap + 2.0, "end"),
            (x - gap + 2.0, y + gap + LABEL_HEIGHT - 4.0, "end"),
        ];
        let own = {
            let r = Self::DOT_RADIUS;
            (x - r, y - r, x + r, y + r)
        };
        let a = self.area;
        candidates.into_iter().find_map(|(lx, ly, anchor)| {
            let label = Label {
                x: round(lx),
                y: round(ly),
                anchor,
                text: text.to_owned(),
            };
            let b = label_box(&label);
            let inside =
                b.0 >= a.left + 2.0 && b.2 <= a.right - 2.0 && b.1 >= a.top && b.3 <= a.bottom;
            let free = self.taken.iter().all(|t| *t == own || !overlaps(*t, b));
            (inside && free).then(|| {
                self.taken.push(b);
                label
            })
        })
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
    size: Size,
) -> LineChart {
    let positions: Vec<f64> = (0..categories.len()).map(|i| i as f64).collect();
    // Positions start at 0, so this scale is linear.
    let sx = Scale::fit(&positions, LEFT, size.width - RIGHT);
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .collect();
    let sy = Scale::fit(&ys, size.height - BOTTOM, TOP);
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
            let dots: Vec<Mark> = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, v)))
                .map(|(i, v)| Mark {
                    x: sx.px(i as f64),
                    y: sy.px(v),
                    title: format!("{label} @ {}: {}", categories[i], fmt_y(v)),
                })
                .collect();
            Series {
                label: label.clone(),
                color: PALETTE[k % PALETTE.len()],
                dash: DASHES[(k / PALETTE.len()) % DASHES.len()],
                points: polyline(dots.iter().map(|d| (d.x, d.y))),
                dots,
            }
        })
        .collect();
    LineChart {
        title: title.to_owned(),
        frame: frame(size, "run", y_label, x_ticks, sy.ticks(fmt_y)),
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
    fn labels_never_overlap_and_stay_inside() {
        // A crowded cluster: some labels have to give way, none may overlap another or a dot.
        let points: Vec<Point> = (0..30)
            .map(|i| Point {
                label: format!("method-{i}"),
                x: 1.0 + (i % 6) as f64 * 0.05,
                y: 0.5 + (i / 6) as f64 * 0.01,
                reference: i == 0,
            })
            .collect();
        let fmt = |v: f64| format!("{v}");
        let axis = |title| Axis {
            title,
            fmt: &fmt,
            higher_is_better: false,
        };
        let chart = scatter(
            "t",
            axis("cost"),
            Axis {
                higher_is_better: true,
                ..axis("acc")
            },
            &points,
            LARGE,
        );
        let labels: Vec<&Label> = chart.dots.iter().filter_map(|d| d.label.as_ref()).collect();
        assert_eq!(chart.unlabelled, points.len() - labels.len());
        assert!(
            labels.len() >= 10,
            "most dots keep a label: {}",
            labels.len()
        );
        let f = &chart.frame;
        for (i, a) in labels.iter().enumerate() {
            let b = label_box(a);
            assert!(b.0 >= f.left && b.2 <= f.right && b.1 >= f.top && b.3 <= f.bottom);
            for other in &labels[i + 1..] {
                assert!(!overlaps(b, label_box(other)), "{a:?} overlaps {other:?}");
            }
            for d in &chart.dots {
                let dot = (d.x - 6.0, d.y - 6.0, d.x + 6.0, d.y + 6.0);
                let own = d.label.as_ref() == Some(*a);
                assert!(own || !overlaps(b, dot), "{a:?} covers a dot");
            }
        }
        // The reference is drawn as such and labelled first.
        assert_eq!(chart.dots[0].kind, DotKind::Reference);
        assert!(chart.dots[0].label.is_some());
        assert!(chart.reference.is_some());
        assert_eq!(chart.better.text, "↖ better");
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
