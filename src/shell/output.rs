//! Printing results as aligned tables, JSON lines or CSV.

use std::io::Write;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use stratosdb_engine::Value;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables, for people.
    Table,
    /// One JSON object per row per line; `{"affected": N}` for statements without rows.
    Json,
    /// A header line, then one line per row.
    Csv,
}

/// The result of one statement, as the shell prints it.
pub enum Outcome {
    /// Rows: each an object keyed by column name; `columns` gives the order.
    Rows {
        columns: Vec<String>,
        rows: Vec<Value>,
    },
    /// A statement that changed documents or the catalog.
    Affected(u64),
    /// Text for people (e.g. the plan of EXPLAIN in table mode).
    Message(String),
}

pub fn print(out: &mut impl Write, format: Format, outcome: &Outcome) -> std::io::Result<()> {
    match outcome {
        Outcome::Rows { columns, rows } => match format {
            Format::Json => {
                for row in rows {
                    writeln!(out, "{}", row.to_json_string())?;
                }
                Ok(())
            }
            Format::Csv => print_csv(out, &columns_of(columns, rows), rows),
            Format::Table => print_table(out, &columns_of(columns, rows), rows),
        },
        Outcome::Affected(n) => match format {
            Format::Json => writeln!(out, "{{\"affected\":{n}}}"),
            Format::Csv => writeln!(out, "affected\n{n}"),
            Format::Table => writeln!(out, "{n} affected"),
        },
        // Catalog changes return no rows and write no documents.
        Outcome::Message(text) => match format {
            Format::Json => writeln!(out, "{{\"affected\":0}}"),
            Format::Csv => writeln!(out, "affected\n0"),
            Format::Table => writeln!(out, "{text}"),
        },
    }
}

/// The columns to show: as the query layer named them, or (if it named none)
/// every field seen, `_id` first.
fn columns_of(columns: &[String], rows: &[Value]) -> Vec<String> {
    if !columns.is_empty() {
        return columns.to_vec();
    }
    let mut seen: Vec<String> = Vec::new();
    for row in rows {
        if let Some(obj) = row.as_object() {
            for key in obj.keys() {
                if !seen.contains(key) {
                    seen.push(key.clone());
                }
            }
        }
    }
    seen.sort_by_key(|k| (k != "_id", k.clone()));
    seen
}

/// A cell: strings as they are, other values as JSON, missing as empty.
fn cell(row: &Value, column: &str) -> String {
    match row.as_object().and_then(|o| o.get(column)) {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) => "NULL".to_string(),
        Some(other) => other.to_json_string(),
    }
}

fn print_table(out: &mut impl Write, columns: &[String], rows: &[Value]) -> std::io::Result<()> {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(columns.to_vec());
    for row in rows {
        table.add_row(columns.iter().map(|c| cell(row, c)).collect::<Vec<_>>());
    }
    writeln!(out, "{table}")?;
    let n = rows.len();
    writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })
}

fn print_csv(out: &mut impl Write, columns: &[String], rows: &[Value]) -> std::io::Result<()> {
    let line = |fields: Vec<String>| {
        fields
            .into_iter()
            .map(|f| csv_field(&f))
            .collect::<Vec<_>>()
            .join(",")
    };
    writeln!(out, "{}", line(columns.to_vec()))?;
    for row in rows {
        writeln!(
            out,
            "{}",
            line(columns.iter().map(|c| cell(row, c)).collect())
        )?;
    }
    Ok(())
}

/// RFC 4180 quoting: fields with a comma, quote or line break are quoted.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}
