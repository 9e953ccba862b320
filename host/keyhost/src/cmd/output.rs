//! How client commands print: aligned text for people, `--json` for scripts.

use clap::Args;
use serde_json::Value;

/// The output flag every client command takes.
#[derive(Debug, Args)]
pub struct Output {
    /// Print the server's answer as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Output {
    /// Prints `value` as JSON with --json, else the text `human` makes.
    pub fn print(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }
}

/// An aligned text table: a header line and one line per row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let t = super::table(
            &["Name", "Policy"],
            &[vec!["a".into(), "minio".into()], vec!["longer-name".into(), "x".into()]],
        );
        assert_eq!(t, "Name         Policy\na            minio\nlonger-name  x");
    }
}
