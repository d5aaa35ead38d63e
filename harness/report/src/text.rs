//! Plain-text tables for the terminal (`compare`, `--check-targets`): aligned columns, or
//! markdown for a CI job summary.

/// `rows` under `header`, as markdown or as columns aligned with two spaces between them.
pub fn render_table(header: &[&str], rows: &[Vec<String>], markdown: bool) -> String {
    if markdown {
        markdown_table(header, rows)
    } else {
        text_table(header, rows)
    }
}

fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push_str(&line(
        &header.iter().map(|_| "---".to_owned()).collect::<Vec<_>>(),
    ));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let all: Vec<&Vec<String>> = std::iter::once(&head).chain(rows).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| all.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    all.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned() + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let rows = vec![vec!["a".to_owned(), "1".to_owned()]];
        assert_eq!(
            render_table(&["x", "y"], &rows, true),
            "| x | y |\n| --- | --- |\n| a | 1 |\n"
        );
        assert_eq!(render_table(&["xx", "y"], &rows, false), "xx  y\na   1\n");
    }
}
