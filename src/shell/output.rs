//! Printing the query layer's [`StatementResult`]s as aligned tables, JSON
//! lines or CSV. The columns are the query layer's: for a projection the
//! SELECT list in order, for `SELECT *` `_id` then every top-level field met.

use std::io::Write;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use stratosdb::rows::json_row;
use stratosdb_engine::Value;
use stratosdb_query::StatementResult;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables, for people.
    Table,
    /// One JSON object per row per line, keys in column order;
    /// `{"affected": N}` for statements without rows.
    Json,
    /// A header line, then one line per row; null and missing are empty fields.
    Csv,
}

impl Format {
    /// Whether stdout is for data only (informational lines go to stderr).
    pub fn data_only(self) -> bool {
        self != Format::Table
    }
}

pub fn print(
    out: &mut impl Write,
    format: Format,
    result: &StatementResult,
) -> std::io::Result<()> {
    match result {
        StatementResult::Rows { columns, rows } => match format {
            Format::Json => {
                for row in rows {
                    writeln!(out, "{}", json_row(columns, row))?;
                }
                Ok(())
            }
            Format::Csv => print_csv(out, columns, rows),
            Format::Table => print_table(out, columns, rows),
        },
        StatementResult::Affected(n) => match format {
            Format::Json => writeln!(out, "{{\"affected\":{n}}}"),
            Format::Csv => writeln!(out, "affected\n{n}"),
            Format::Table => writeln!(out, "{n} affected"),
        },
        // Catalog changes return no rows and write no documents.
        StatementResult::Message(text) => match format {
            Format::Json => writeln!(out, "{{\"affected\":0}}"),
            Format::Csv => writeln!(out, "affected\n0"),
            Format::Table => writeln!(out, "{text}"),
        },
    }
}

fn field<'a>(row: &'a Value, column: &str) -> Option<&'a Value> {
    row.as_object().and_then(|o| o.get(column))
}

/// A table cell: strings as they are, other values as JSON, missing as empty.
fn table_cell(row: &Value, column: &str) -> String {
    let text = match field(row, column) {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) => "NULL".to_string(),
        Some(other) => other.to_json_string(),
    };
    clip_for_table(text)
}

/// Longest text a table cell or header shows. Laying out a table costs time
/// that grows faster than a cell's width, and nobody reads a megabyte in a
/// terminal cell: `--format json` or `csv` print values whole.
const MAX_TABLE_CELL_CHARS: usize = 4096;

fn clip_for_table(text: String) -> String {
    match text.char_indices().nth(MAX_TABLE_CELL_CHARS) {
        None => text,
        Some((at, _)) => {
            let rest = text[at..].chars().count();
            format!(
                "{}… ({rest} more characters; --format json shows all)",
                &text[..at]
            )
        }
    }
}

fn print_table(out: &mut impl Write, columns: &[String], rows: &[Value]) -> std::io::Result<()> {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(columns.iter().map(|c| clip_for_table(c.clone())));
    for row in rows {
        table.add_row(
            columns
                .iter()
                .map(|c| table_cell(row, c))
                .collect::<Vec<_>>(),
        );
    }
    writeln!(out, "{table}")?;
    let n = rows.len();
    writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })
}

fn print_csv(out: &mut impl Write, columns: &[String], rows: &[Value]) -> std::io::Result<()> {
    let header: Vec<String> = columns.iter().map(|c| csv_text(c)).collect();
    writeln!(out, "{}", header.join(","))?;
    for row in rows {
        let fields: Vec<String> = columns.iter().map(|c| csv_cell(row, c)).collect();
        writeln!(out, "{}", fields.join(","))?;
    }
    Ok(())
}

/// A CSV field: null and missing are empty and unquoted, the empty string
/// is `""`, other strings as they are, other values as JSON.
fn csv_cell(row: &Value, column: &str) -> String {
    match field(row, column) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => csv_text(s),
        Some(other) => csv_text(&other.to_json_string()),
    }
}

/// RFC 4180 quoting: fields with a comma, quote or line break are quoted,
/// and so is the empty string (to tell it from null).
fn csv_text(text: &str) -> String {
    if text.is_empty() || text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_table_cells_are_clipped_on_a_character_boundary() {
        let wide = "é".repeat(MAX_TABLE_CELL_CHARS + 10);
        let clipped = clip_for_table(wide);
        assert!(clipped.starts_with(&"é".repeat(MAX_TABLE_CELL_CHARS)));
        assert!(clipped.ends_with("(10 more characters; --format json shows all)"));
        assert_eq!(clip_for_table("short".into()), "short");
    }

    fn rows(columns: &[&str], json: &[&str]) -> StatementResult {
        StatementResult::Rows {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: json
                .iter()
                .map(|j| Value::from_json_str(j).expect("test JSON"))
                .collect(),
        }
    }

    fn printed(format: Format, result: &StatementResult) -> String {
        let mut out = Vec::new();
        print(&mut out, format, result).expect("in memory");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn json_keys_follow_the_columns() {
        let r = rows(
            &["z", "a.b", "m"],
            &[r#"{"a.b":1,"m":null,"z":"x"}"#, r#"{"m":[1]}"#],
        );
        assert_eq!(
            printed(Format::Json, &r),
            "{\"z\":\"x\",\"a.b\":1,\"m\":null}\n{\"m\":[1]}\n"
        );
    }

    #[test]
    fn csv_tells_null_from_the_empty_string() {
        let r = rows(
            &["a", "b", "c"],
            &[r#"{"a":null,"b":"","c":"x,y"}"#, r#"{"b":"say \"hi\""}"#],
        );
        assert_eq!(
            printed(Format::Csv, &r),
            "a,b,c\n,\"\",\"x,y\"\n,\"say \"\"hi\"\"\",\n"
        );
    }
}
