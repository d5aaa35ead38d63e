//! Tables as the report template draws them, and the pivot from long records to rows ×
//! columns that every table of the report starts from.
use crate::metric::{fmt_delta, fmt_value};
use crate::significance::Tested;
use serde::Serialize;
use std::collections::HashMap;

/// Two-sided significance level of the report's Δ columns.
pub const ALPHA: f64 = 0.05;
use std::hash::Hash;

/// How a cell is drawn (a CSS class of `reports/report.html`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    Label,
    Num,
    /// The single best value of its column (never given to ties).
    Best,
    /// The label of a base model's reference (dense) row.
    Ref,
    Pass,
    Fail,
    Missing,
}

/// A difference shown under a cell's value, coloured by its significance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    pub text: String,
    /// `better`, `worse` (significant either way), `same` (not significant) or `untested`.
    pub class: &'static str,
    /// Tooltip: the test, p-value and interval.
    pub title: String,
}

impl Delta {
    /// `tested` as a Δ line: `−0.0312*` when its two-sided p is below [`ALPHA`], coloured by
    /// whether it goes the better way.
    pub fn of(tested: &Tested, higher_is_better: Option<bool>, versus: &str) -> Self {
        let p = tested.two_sided_p();
        let significant = p.is_some_and(|p| p < ALPHA) && tested.delta != 0.0;
        let class = match (p, significant, higher_is_better) {
            (None, _, _) => "untested",
            (Some(_), false, _) => "same",
            (Some(_), true, None) => "changed",
            (Some(_), true, Some(higher)) if higher == (tested.delta > 0.0) => "better",
            (Some(_), true, Some(_)) => "worse",
        };
        let mut title = format!("Δ vs {versus}: {}", fmt_delta(tested.delta));
        match p {
            Some(p) => title.push_str(&format!(
                "; {}, two-sided p = {p:.3}",
                tested.test.describe()
            )),
            None => title.push_str("; untested (no per-document numbers or standard errors)"),
        }
        if let Some((lo, hi)) = tested.ci {
            title.push_str(&format!(", 95% CI [{}, {}]", fmt_delta(lo), fmt_delta(hi)));
        }
        Self {
            text: format!(
                "{}{}",
                fmt_delta(tested.delta),
                if significant { "*" } else { "" }
            ),
            class,
            title,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub text: String,
    pub style: Style,
    /// What the table sorts by (numbers), `None` for text and missing values.
    pub sort: Option<f64>,
    pub title: Option<String>,
    /// Small print after the value (a ± interval).
    pub note: Option<String>,
    pub delta: Option<Delta>,
}

impl Cell {
    fn new(text: impl Into<String>, style: Style) -> Self {
        Self {
            text: text.into(),
            style,
            sort: None,
            title: None,
            note: None,
            delta: None,
        }
    }

    pub fn label(text: impl Into<String>) -> Self {
        Self::new(text, Style::Label)
    }

    pub fn num(text: impl Into<String>) -> Self {
        Self::new(text, Style::Num)
    }

    /// A number shown as `text` and sorted by `value`.
    pub fn value(text: impl Into<String>, value: f64) -> Self {
        Self {
            sort: value.is_finite().then_some(value),
            ..Self::num(text)
        }
    }

    pub fn styled(text: impl Into<String>, style: Style) -> Self {
        Self::new(text, style)
    }

    pub fn missing() -> Self {
        Self::new("—", Style::Missing)
    }

    /// `value` with its 95% normal interval (± 1.96·stderr) in small print.
    pub fn with_interval(value: f64, stderr: Option<f64>) -> Self {
        Self {
            note: stderr
                .filter(|s| s.is_finite())
                .map(|se| format!("± {}", fmt_value(1.96 * se))),
            ..Self::value(fmt_value(value), value)
        }
    }

    pub fn with_delta(self, delta: Option<Delta>) -> Self {
        Self { delta, ..self }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// Marks the best value of a column (`values[i]` of `cells[i]`) when the direction is known
/// and exactly one row has it; ties — equal as printed — mark nothing.
pub fn mark_best(
    cells: &mut [&mut Cell],
    values: &[Option<f64>],
    higher_is_better: Option<bool>,
    printed: &dyn Fn(f64) -> String,
) {
    let Some(higher) = higher_is_better else {
        return;
    };
    let sign = if higher { 1.0 } else { -1.0 };
    let finite: Vec<(usize, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.filter(|v| v.is_finite()).map(|v| (i, v)))
        .collect();
    let Some(&(best, best_value)) = finite
        .iter()
        .max_by(|a, b| (sign * a.1).total_cmp(&(sign * b.1)))
    else {
        return;
    };
    let tied = finite
        .iter()
        .filter(|(_, v)| printed(*v) == printed(best_value))
        .count();
    if finite.len() > 1 && tied == 1 {
        cells[best].style = Style::Best;
    }
}

/// Long items `(row, column, value)` arranged as rows × columns, both in order of first
/// appearance; a later item for the same cell replaces an earlier one.
#[derive(Debug, Clone)]
pub struct Pivot<R, C, V> {
    pub rows: Vec<R>,
    pub columns: Vec<C>,
    cells: HashMap<(usize, usize), V>,
}

impl<R: Eq + Hash + Clone, C: Eq + Hash + Clone, V> Pivot<R, C, V> {
    pub fn new(items: impl IntoIterator<Item = (R, C, V)>) -> Self {
        let mut rows = Distinct::default();
        let mut columns = Distinct::default();
        let mut cells = HashMap::new();
        for (r, c, v) in items {
            let r = rows.position(r);
            let c = columns.position(c);
            cells.insert((r, c), v);
        }
        Self {
            rows: rows.items,
            columns: columns.items,
            cells,
        }
    }

    pub fn get(&self, row: usize, column: usize) -> Option<&V> {
        self.cells.get(&(row, column))
    }
}

/// The distinct items, in order of first appearance.
pub fn distinct<T: Eq + Hash + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Distinct::default();
    for item in items {
        out.position(item);
    }
    out.items
}

/// Items in order of first appearance, with a hash index (tables of thousands of rows).
struct Distinct<T> {
    items: Vec<T>,
    index: HashMap<T, usize>,
}

impl<T> Default for Distinct<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Eq + Hash + Clone> Distinct<T> {
    fn position(&mut self, item: T) -> usize {
        if let Some(&i) = self.index.get(&item) {
            return i;
        }
        self.index.insert(item.clone(), self.items.len());
        self.items.push(item);
        self.items.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best_of(values: &[Option<f64>], higher: Option<bool>) -> Vec<Style> {
        let mut cells: Vec<Cell> = values.iter().map(|_| Cell::num("")).collect();
        let mut refs: Vec<&mut Cell> = cells.iter_mut().collect();
        mark_best(&mut refs, values, higher, &|v| format!("{v:.2}"));
        cells.into_iter().map(|c| c.style).collect()
    }

    #[test]
    fn only_a_unique_best_is_marked() {
        use Style::{Best, Num};
        assert_eq!(
            best_of(&[Some(0.5), Some(0.7), None], Some(true)),
            [Num, Best, Num]
        );
        assert_eq!(best_of(&[Some(0.5), Some(0.7)], Some(false)), [Best, Num]);
        // Ties — also ties as printed — mark nothing.
        assert_eq!(best_of(&[Some(0.7), Some(0.7)], Some(true)), [Num, Num]);
        assert_eq!(
            best_of(&[Some(0.701), Some(0.699), Some(0.1)], Some(true)),
            [Num, Num, Num]
        );
        // One value, or no direction: nothing to compare.
        assert_eq!(best_of(&[Some(0.7), None], Some(true)), [Num, Num]);
        assert_eq!(best_of(&[Some(0.5), Some(0.7)], None), [Num, Num]);
    }

    #[test]
    fn pivot_keeps_first_appearance_order_and_last_value() {
        let p = Pivot::new([("b", 1, 'x'), ("a", 2, 'y'), ("b", 2, 'z'), ("b", 1, 'w')]);
        assert_eq!(p.rows, ["b", "a"]);
        assert_eq!(p.columns, [1, 2]);
        assert_eq!(p.get(0, 0), Some(&'w'));
        assert_eq!(p.get(1, 0), None);
        assert_eq!(p.get(0, 1), Some(&'z'));
    }
}
