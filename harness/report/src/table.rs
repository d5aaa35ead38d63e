//! Tables as the report template draws them, and the pivot from long records to rows ×
//! columns that every table of the report starts from.
use serde::Serialize;
use std::collections::HashMap;
use std::hash::Hash;

/// How a cell is drawn (a CSS class of `reports/report.html`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    Label,
    Num,
    Best,
    Pass,
    Fail,
    Missing,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub text: String,
    pub style: Style,
}

impl Cell {
    pub fn label(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            style: Style::Label,
        }
    }

    pub fn num(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            style: Style::Num,
        }
    }

    pub fn missing() -> Self {
        Self {
            text: "—".into(),
            style: Style::Missing,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
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
        let mut rows = Vec::new();
        let mut columns = Vec::new();
        let mut cells = HashMap::new();
        for (r, c, v) in items {
            let r = position(&mut rows, r);
            let c = position(&mut columns, c);
            cells.insert((r, c), v);
        }
        Self {
            rows,
            columns,
            cells,
        }
    }

    pub fn get(&self, row: usize, column: usize) -> Option<&V> {
        self.cells.get(&(row, column))
    }
}

/// The distinct items, in order of first appearance.
pub fn distinct<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        position(&mut out, item);
    }
    out
}

fn position<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
    list.iter().position(|x| *x == item).unwrap_or_else(|| {
        list.push(item);
        list.len() - 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
