//! Token lists as aligned tables that fit the terminal: the columns of
//! each list, their cells, and the layout (which a paged listing computes
//! from its first page and keeps).

use std::io::{self, Write};
use std::time::SystemTime;

use super::output::{TokenView, compact_permissions, table_time, truncate};
use super::terminal::clean;

/// Spaces between table columns.
const GAP: usize = 2;

/// The columns of a database token list: ID, STATUS, PERMISSIONS,
/// DESCRIPTION (flexible columns marked `true`).
pub const DATABASE_COLUMNS: &[(&str, bool)] = &[
    ("ID", false),
    ("STATUS", false),
    ("PERMISSIONS", true),
    ("DESCRIPTION", true),
];

/// The columns of a management or proxy token list: ID, STATUS, EXPIRES,
/// DESCRIPTION (they have no `get`, so the expiry is shown here).
pub const MANAGEMENT_COLUMNS: &[(&str, bool)] = &[
    ("ID", false),
    ("STATUS", false),
    ("EXPIRES", false),
    ("DESCRIPTION", true),
];

/// The cells of [`DATABASE_COLUMNS`] for `tokens`.
pub fn database_rows(tokens: &[TokenView], now: SystemTime) -> Vec<Vec<String>> {
    tokens
        .iter()
        .map(|t| {
            vec![
                clean(&t.id),
                t.status(now).to_owned(),
                compact_permissions(&t.permissions),
                clean(&t.description),
            ]
        })
        .collect()
}

/// The cells of [`MANAGEMENT_COLUMNS`] for `tokens`.
pub fn management_rows(tokens: &[TokenView], now: SystemTime) -> Vec<Vec<String>> {
    tokens
        .iter()
        .map(|t| {
            vec![
                clean(&t.id),
                t.status(now).to_owned(),
                table_time(t.expires_at, "never"),
                clean(&t.description),
            ]
        })
        .collect()
}

/// A list of database tokens ([`DATABASE_COLUMNS`]).
pub fn database_table(
    out: &mut dyn Write,
    tokens: &[TokenView],
    now: SystemTime,
    width: usize,
) -> io::Result<()> {
    table(out, DATABASE_COLUMNS, &database_rows(tokens, now), width)
}

/// A list of management or proxy tokens ([`MANAGEMENT_COLUMNS`]).
pub fn management_table(
    out: &mut dyn Write,
    tokens: &[TokenView],
    now: SystemTime,
    width: usize,
) -> io::Result<()> {
    table(
        out,
        MANAGEMENT_COLUMNS,
        &management_rows(tokens, now),
        width,
    )
}

/// An aligned table, laid out for its rows.
fn table(
    out: &mut dyn Write,
    columns: &[(&str, bool)],
    rows: &[Vec<String>],
    width: usize,
) -> io::Result<()> {
    let layout = TableLayout::fit(columns, rows, width);
    layout.header(out)?;
    layout.rows(out, rows)
}

/// Column widths of an aligned table. Fixed columns keep their full width
/// (ids are never cut); flexible ones share what is left, the narrow ones
/// getting all they need first, and are cut with an ellipsis. A listing
/// that comes in pages is laid out for its first page and keeps that
/// layout: later rows are printed as they come.
#[derive(Debug, Clone)]
pub struct TableLayout {
    headers: Vec<String>,
    widths: Vec<usize>,
    flexible: Vec<bool>,
}

impl TableLayout {
    /// The layout that fits `rows` in `width` columns.
    pub fn fit(columns: &[(&str, bool)], rows: &[Vec<String>], width: usize) -> Self {
        let mut widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, (header, _))| {
                rows.iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .chain([header.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let gaps = GAP * columns.len().saturating_sub(1);
        if widths.iter().sum::<usize>() + gaps > width {
            let fixed: usize = columns
                .iter()
                .zip(&widths)
                .filter(|((_, flex), _)| !flex)
                .map(|(_, w)| w)
                .sum();
            let mut left = width.saturating_sub(fixed + gaps);
            let mut flexible: Vec<usize> = (0..columns.len()).filter(|&i| columns[i].1).collect();
            flexible.sort_by_key(|&i| widths[i]);
            let mut remaining = flexible.len();
            for i in flexible {
                let share = left / remaining.max(1);
                let header = columns[i].0.chars().count();
                widths[i] = widths[i].min(share.max(header));
                left = left.saturating_sub(widths[i]);
                remaining -= 1;
            }
        }
        Self {
            headers: columns.iter().map(|(h, _)| (*h).to_owned()).collect(),
            widths,
            flexible: columns.iter().map(|(_, flex)| *flex).collect(),
        }
    }

    /// The header line.
    pub fn header(&self, out: &mut dyn Write) -> io::Result<()> {
        self.line(out, &self.headers)
    }

    /// `rows` in this layout. Cells of flexible columns wider than their
    /// column are cut; a wider fixed cell (an id longer than any before
    /// it) is printed whole and shifts the rest of its line.
    pub fn rows(&self, out: &mut dyn Write, rows: &[Vec<String>]) -> io::Result<()> {
        for row in rows {
            self.line(out, row)?;
        }
        Ok(())
    }

    fn line(&self, out: &mut dyn Write, row: &[String]) -> io::Result<()> {
        let mut line = String::new();
        for (i, w) in self.widths.iter().enumerate() {
            if i > 0 {
                line.push_str(&" ".repeat(GAP));
            }
            let cell = row.get(i).map_or("", String::as_str);
            let cell = if self.flexible.get(i).copied().unwrap_or(true) {
                truncate(cell, *w)
            } else {
                cell.to_owned()
            };
            let pad = w.saturating_sub(cell.chars().count());
            line.push_str(&cell);
            line.push_str(&" ".repeat(pad));
        }
        writeln!(out, "{}", line.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::tests::{render, view};

    #[test]
    fn tables_fit_80_columns_and_keep_ids_whole() {
        let long = "x".repeat(300);
        let many: Vec<(&str, bool, bool)> = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
            .iter()
            .map(|d| (*d, true, true))
            .collect();
        let tokens = vec![
            view(&long, &many),
            view("short\nline", &[("*", true, false)]),
        ];
        let now = SystemTime::now();
        let text = render(|out| database_table(out, &tokens, now, 80));
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
        assert!(text.contains("0c8ba4ef-7f5c-4a3e-9a71-1f2a2b3c4d5e"));
        assert!(text.contains('…'));
        assert!(text.contains("short\\u{a}line"));
        let text = render(|out| management_table(out, &tokens, now, 80));
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
        assert!(text.contains("never"));
    }

    #[test]
    fn narrow_content_is_not_cut() {
        let tokens = vec![view("telegraf", &[("db1", true, false)])];
        let text = render(|out| database_table(out, &tokens, SystemTime::now(), 80));
        assert!(text.contains("read:db1"));
        assert!(text.contains("telegraf"));
        assert!(!text.contains('…'));
    }
}
