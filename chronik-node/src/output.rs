//! `--output table|json|yaml` for the cluster commands: one serializable
//! value per command, rendered as an aligned table for people or as JSON or
//! YAML for scripts.

use clap::ValueEnum;
use serde::Serialize;

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Yaml,
}

/// A table: a header row and data rows, printed with aligned columns.
pub struct Table {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.len());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut out = vec![line(self.header.clone())];
        for r in &self.rows {
            out.push(line(r.iter().map(String::as_str).collect()));
        }
        out.join("\n")
    }
}

/// Prints `value` in `format`; `table` renders it for people.
pub fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> Result<(), String> {
    let text = match format {
        OutputFormat::Table => table(value),
        OutputFormat::Json => serde_json::to_string_pretty(value).map_err(|e| e.to_string())?,
        OutputFormat::Yaml => yaml_serde::to_string(value).map_err(|e| e.to_string())?,
    };
    write_stdout(format!("{}\n", text.trim_end()).as_bytes());
    Ok(())
}

/// Writes to stdout; a reader that went away (`| head`) ends the command
/// quietly with exit code 0 instead of a broken-pipe panic.
pub fn write_stdout(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// A value, or `-` when unknown.
pub fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// `1,2,3`.
pub fn ids(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = Table {
            header: vec!["A", "LONGER"],
            rows: vec![
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        };
        assert_eq!(t.render(), "A    LONGER\nxyz  1\nq    22");
    }
}
