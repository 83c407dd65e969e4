//! How results reach the terminal or a pipe. [`Ui`] knows the output format
//! (`table` for people, `json` for scripts: the API's own JSON, pretty
//! printed) and whether to be fancy: colours and spinners only when stdout
//! is a terminal, `NO_COLOR` is unset and `TERM` is not `dumb`.
//!
//! Tables are comfy-table's, borderless like `kubectl get`, sized to the
//! terminal when stdout is one (long cells wrap) and left unbroken in a
//! pipe, so `grep` and `awk` see one line per row.

use std::io::IsTerminal as _;

use chrono::{DateTime, Utc};
use comfy_table::{
    Attribute, Cell, CellAlignment, Color, ColumnConstraint, ContentArrangement, Table, Width,
    presets,
};
use serde_json::Value;

use crate::args::Format;
use crate::error::CliError;

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub format: Format,
    /// Colours, spinners and progress bars.
    pub fancy: bool,
}

impl Ui {
    pub fn detect(format: Format) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let fancy = std::io::stdout().is_terminal() && !no_color && !dumb;
        console::set_colors_enabled(fancy);
        console::set_colors_enabled_stderr(fancy);
        Self { format, fancy }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints a JSON document on stdout.
    pub fn print_json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON always serializes")
        );
    }

    /// Prints an error on stderr (and, with `--output json`, the API's
    /// problem document on stdout, for scripts).
    pub fn error(&self, error: &CliError) {
        if self.json()
            && let Some(body) = error.body()
        {
            self.print_json(body);
        }
        let text = error.render();
        let text = if self.fancy {
            let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
            let mut styled = console::style(first).red().bold().for_stderr().to_string();
            if !rest.is_empty() {
                styled.push('\n');
                styled.push_str(rest);
            }
            styled
        } else {
            text
        };
        eprintln!("{text}");
    }

    /// An operation's status, coloured when fancy.
    pub fn status(&self, status: &str) -> String {
        let style = console::style(status.to_owned());
        match status {
            "completed" => style.green(),
            "failed" => style.red(),
            "cancelled" => style.yellow(),
            "running" => style.cyan(),
            _ => style,
        }
        .to_string()
    }

    /// Same, for stderr.
    pub fn status_stderr(&self, status: &str) -> String {
        let style = console::style(status.to_owned()).for_stderr();
        match status {
            "completed" => style.green(),
            "failed" => style.red(),
            "cancelled" => style.yellow(),
            "running" => style.cyan(),
            _ => style,
        }
        .to_string()
    }

    pub fn dim(&self, text: &str) -> String {
        console::style(text).dim().to_string()
    }

    /// A borderless table with this header.
    pub fn table(&self, header: &[&str]) -> Table {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Dynamic);
        if !std::io::stdout().is_terminal() {
            table.force_no_tty();
        }
        table.set_header(header.iter().map(|h| {
            let cell = Cell::new(h);
            if self.fancy {
                cell.add_attribute(Attribute::Bold)
            } else {
                cell
            }
        }));
        for (column, name) in table.column_iter_mut().zip(header) {
            column.set_padding((0, 2));
            // A header is never split over lines.
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(
                name.len() as u16
            )));
        }
        table
    }

    /// A cell for an operation's status, coloured when fancy.
    pub fn status_cell(&self, status: &str) -> Cell {
        let cell = Cell::new(status);
        if !self.fancy {
            return cell;
        }
        match status {
            "completed" => cell.fg(Color::Green),
            "failed" => cell.fg(Color::Red),
            "cancelled" => cell.fg(Color::Yellow),
            "running" => cell.fg(Color::Cyan),
            _ => cell,
        }
    }

    /// Prints a table; its first column (the id or name a person copies)
    /// never wraps, the others wrap to fit the terminal.
    pub fn print_table(&self, mut table: Table) {
        if let Some(first) = table.column_mut(0) {
            first.set_constraint(ColumnConstraint::ContentWidth);
        }
        if let Some(last) = table.column_iter_mut().last() {
            last.set_padding((0, 0));
        }
        println!("{}", trim_lines(&table.to_string()));
    }

    /// Prints `key  value` lines for one object.
    pub fn print_fields(&self, rows: &[(&str, String)]) {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Dynamic);
        if !std::io::stdout().is_terminal() {
            table.force_no_tty();
        }
        for (key, value) in rows {
            if value.is_empty() {
                continue;
            }
            let key = Cell::new(format!("{key}:")).set_alignment(CellAlignment::Left);
            let key = if self.fancy {
                key.add_attribute(Attribute::Bold)
            } else {
                key
            };
            table.add_row(vec![key, Cell::new(value)]);
        }
        for column in table.column_iter_mut() {
            column.set_padding((0, 1));
        }
        println!("{}", trim_lines(&table.to_string()));
    }
}

fn trim_lines(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A string field, or "" when absent or null.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time as an age: `12s`, `5m`, `3h`, `2d` (empty if absent).
pub fn age(value: &Value) -> String {
    let Some(time) = value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    else {
        return String::new();
    };
    let secs = (Utc::now() - time.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// The time between two RFC 3339 times, e.g. `2.1s`, `3m12s`.
pub fn elapsed(from: &Value, to: &Value) -> Option<String> {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    };
    let millis = (parse(to)? - parse(from)?).num_milliseconds().max(0);
    Some(if millis < 60_000 {
        format!("{:.1}s", millis as f64 / 1000.0)
    } else {
        let secs = millis / 1000;
        if secs < 3600 {
            format!("{}m{:02}s", secs / 60, secs % 60)
        } else {
            format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn elapsed_reads_like_a_person_says_it() {
        let at = |s: &str| json!(s);
        assert_eq!(
            elapsed(&at("2024-01-01T00:00:00Z"), &at("2024-01-01T00:00:02.1Z")).as_deref(),
            Some("2.1s")
        );
        assert_eq!(
            elapsed(&at("2024-01-01T00:00:00Z"), &at("2024-01-01T00:03:12Z")).as_deref(),
            Some("3m12s")
        );
        assert_eq!(elapsed(&Value::Null, &at("2024-01-01T00:00:00Z")), None);
    }

    #[test]
    fn text_leaves_strings_bare_and_nulls_empty() {
        assert_eq!(text(&json!("x")), "x");
        assert_eq!(text(&json!(3)), "3");
        assert_eq!(text(&Value::Null), "");
    }
}
