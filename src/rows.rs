//! Result rows as JSON text with their keys in column order: the one
//! rendering the shell's `--format json` and the HTTP API's `rows` share.

use stratosdb_engine::Value;

/// The row as a JSON object with its keys in column order (a missing value
/// is an absent key); keys the columns do not name, if any, come last.
///
/// ```
/// use stratosdb::rows::json_row;
/// use stratosdb_engine::Value;
/// let row = Value::from_json_str(r#"{"a":1,"z":"x"}"#).unwrap();
/// let columns = ["z".to_string(), "missing".to_string(), "a".to_string()];
/// assert_eq!(json_row(&columns, &row), r#"{"z":"x","a":1}"#);
/// ```
pub fn json_row(columns: &[String], row: &Value) -> String {
    let Some(fields) = row.as_object() else {
        return row.to_json_string();
    };
    let named = columns.iter().filter_map(|c| fields.get_key_value(c));
    let others = fields.iter().filter(|(k, _)| !columns.contains(k));
    let members: Vec<String> = named
        .chain(others)
        .map(|(k, v)| format!("{}:{}", json_string(k), v.to_json_string()))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_json_string()
}

/// Rows as a JSON array, each in column order.
pub fn json_rows(columns: &[String], rows: &[Value]) -> String {
    let rows: Vec<String> = rows.iter().map(|r| json_row(columns, r)).collect();
    format!("[{}]", rows.join(","))
}
