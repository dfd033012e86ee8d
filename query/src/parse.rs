//! Text to statements: splitting a script on `;`, the few statements that are
//! not SQL (`CREATE COLLECTION`, `SHOW COLLECTIONS`, ...), and sqlparser for
//! the rest, with error positions counted from the start of the whole text.

use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::ast::Statement;
use crate::error::{QueryError, Result};
use crate::translate;

/// One statement of a script, and where it starts in the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatementText<'a> {
    pub text: &'a str,
    /// Byte offset of `text` in the script.
    pub offset: usize,
    /// 1-based line and column of the statement's first character.
    pub line: usize,
    pub column: usize,
}

/// Splits a script into statements on `;` outside string literals, quoted
/// identifiers and comments. Blank statements (only spaces or comments) are
/// dropped.
///
/// ```
/// use stratosdb_query::split_statements;
/// let parts = split_statements("SELECT 'a;b' FROM t; -- done;\n DELETE FROM t");
/// let texts: Vec<&str> = parts.iter().map(|s| s.text.trim()).collect();
/// assert_eq!(texts, ["SELECT 'a;b' FROM t", "-- done;\n DELETE FROM t"]);
/// ```
pub fn split_statements(script: &str) -> Vec<StatementText<'_>> {
    let bytes = script.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == q {
                        // A doubled quote is an escaped quote.
                        if bytes.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b';' => {
                push_statement(script, start, i, &mut out);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push_statement(script, start, script.len(), &mut out);
    out
}

fn push_statement<'a>(script: &'a str, start: usize, end: usize, out: &mut Vec<StatementText<'a>>) {
    let end = end.min(script.len());
    let Some(text) = script.get(start..end) else {
        return;
    };
    if strip_comments(text).trim().is_empty() {
        return;
    }
    let (line, column) = line_column(script, start);
    out.push(StatementText {
        text,
        offset: start,
        line,
        column,
    });
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The text with `--` and `/* */` comments blanked out (string literals kept).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' | '`' => {
                quote = Some(c);
                out.push(c);
            }
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str("  ");
                let mut prev = ' ';
                for c in chars.by_ref() {
                    out.push(if c == '\n' { '\n' } else { ' ' });
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Parses one statement (without its `;`).
pub fn parse_statement(sql: &str) -> Result<Statement> {
    let parts = split_statements(sql);
    match parts.as_slice() {
        [one] => parse_part(sql, one),
        [] => Err(QueryError::Syntax("empty statement".into())),
        [_, second, ..] => Err(QueryError::Syntax(format!(
            "expected one statement, found more at Line: {}, Column: {}",
            second.line, second.column
        ))),
    }
}

/// Parses every statement of a script.
pub fn parse_script(script: &str) -> Result<Vec<Statement>> {
    split_statements(script)
        .iter()
        .map(|part| parse_part(script, part))
        .collect()
}

/// Parses one statement (without its `;`) that begins at `line`, `column`
/// (1-based) of a longer script, so that positions in errors count from the
/// script's start: what a shell reading a script piece by piece needs.
///
/// ```
/// use stratosdb_query::parse::parse_statement_at;
/// let err = parse_statement_at("\n  SELECT * FROM", 3, 12).unwrap_err().to_string();
/// assert!(err.contains("at Line: 4, Column: 16"), "{err}");
/// ```
pub fn parse_statement_at(sql: &str, line: usize, column: usize) -> Result<Statement> {
    let origin = Origin { line, column };
    let parts = split_statements(sql);
    match parts.as_slice() {
        [one] => parse_from(sql, one, origin),
        [] => Err(QueryError::Syntax("empty statement".into())),
        [_, second, ..] => {
            let (line, column) = origin.shift((second.line, second.column));
            Err(QueryError::Syntax(format!(
                "expected one statement, found more at Line: {line}, Column: {column}"
            )))
        }
    }
}

/// Where a text begins in the script it was taken from.
#[derive(Clone, Copy, Debug)]
struct Origin {
    line: usize,
    column: usize,
}

impl Origin {
    const START: Origin = Origin { line: 1, column: 1 };

    /// A position in the text to a position in the script.
    fn shift(self, (line, column): (usize, usize)) -> (usize, usize) {
        if line == 1 {
            (self.line, self.column + column - 1)
        } else {
            (self.line + line - 1, column)
        }
    }

    /// The position of a byte offset of `text`, in the script.
    fn at(self, text: &str, offset: usize) -> (usize, usize) {
        self.shift(line_column(text, offset))
    }
}

/// Parses one piece of a script; positions in errors count from the script's start.
pub fn parse_part(script: &str, part: &StatementText<'_>) -> Result<Statement> {
    parse_from(script, part, Origin::START)
}

fn parse_from(script: &str, part: &StatementText<'_>, origin: Origin) -> Result<Statement> {
    let (line, column) = origin.shift((part.line, part.column));
    let part = &StatementText {
        line,
        column,
        ..*part
    };
    if let Some(stmt) = pre_parse(script, part, origin)? {
        return Ok(stmt);
    }
    // Refuse what would exhaust the stack before sqlparser builds it.
    crate::limits::check_statement_text(part.text)?;
    let parsed = Parser::parse_sql(&GenericDialect {}, part.text)
        .map_err(|e| QueryError::Syntax(relocate(&e.to_string(), script, part, origin)))?;
    match parsed.as_slice() {
        [one] => translate::statement(one),
        _ => Err(QueryError::Syntax(format!(
            "expected one statement at Line: {}, Column: {}",
            part.line, part.column
        ))),
    }
}

/// Rewrites sqlparser's "at Line: L, Column: C" (relative to the statement)
/// into a position in the script, and gives "found: EOF" a position too.
/// `part`'s line and column are already in the script's terms.
fn relocate(message: &str, script: &str, part: &StatementText<'_>, origin: Origin) -> String {
    let message = message
        .strip_prefix("sql parser error: ")
        .unwrap_or(message);
    const MARK: &str = " at Line: ";
    if let Some(at) = message.rfind(MARK) {
        let tail = &message[at + MARK.len()..];
        let mut nums = tail
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().unwrap_or(1));
        if let (Some(line), Some(column)) = (nums.next(), nums.next()) {
            let column = if line == 1 {
                column + part.column - 1
            } else {
                column
            };
            let line = line + part.line - 1;
            return format!("{}{MARK}{line}, Column: {column}", &message[..at]);
        }
    }
    // No position (the statement ended too early): point just past its end.
    let end = part.offset + part.text.trim_end().len();
    let (line, column) = origin.at(script, end);
    format!("{message} at Line: {line}, Column: {column}")
}

/// The statements sqlparser does not know: `CREATE COLLECTION name`,
/// `DROP COLLECTION name`, `SHOW COLLECTIONS`, `SHOW INDEXES FROM name`.
fn pre_parse(script: &str, part: &StatementText<'_>, origin: Origin) -> Result<Option<Statement>> {
    // Fast path: these statements start with CREATE, DROP or SHOW.
    let first = part.text.trim_start();
    let keyword = |k: &str| {
        first
            .get(..k.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(k))
    };
    if !(keyword("CREATE")
        || keyword("DROP")
        || keyword("SHOW")
        || first.starts_with("--")
        || first.starts_with("/*"))
    {
        return Ok(None);
    }
    let clean = strip_comments(part.text);
    let words: Vec<(usize, &str)> = words(&clean);
    let upper: Vec<String> = words.iter().map(|(_, w)| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    let at = |i: usize| {
        let offset = part.offset + words.get(i).map_or(clean.trim_end().len(), |w| w.0);
        let (line, column) = origin.at(script, offset);
        format!("Line: {line}, Column: {column}")
    };
    let name = |i: usize, what: &str| -> Result<String> {
        match words.get(i) {
            Some((_, w)) => Ok(unquote(w)),
            None => Err(QueryError::Syntax(format!(
                "Expected: {what} name, found: EOF at {}",
                at(i)
            ))),
        }
    };
    let end = |i: usize| -> Result<()> {
        match words.get(i) {
            None => Ok(()),
            Some((_, w)) => Err(QueryError::Syntax(format!(
                "Expected: end of statement, found: {w} at {}",
                at(i)
            ))),
        }
    };
    let stmt = match upper.as_slice() {
        ["CREATE", "COLLECTION", ..] => {
            let n = name(2, "a collection")?;
            let (shards, replicas) = match words.get(3) {
                None => (None, None),
                Some((offset, _)) => collection_options(&clean[*offset..], |i| {
                    let (line, column) = origin.at(script, part.offset + offset + i);
                    format!("Line: {line}, Column: {column}")
                })?,
            };
            Statement::CreateCollection {
                name: n,
                shards,
                replicas,
            }
        }
        ["DROP", "COLLECTION", ..] => {
            let n = name(2, "a collection")?;
            end(3)?;
            Statement::DropCollection(n)
        }
        ["SHOW", "COLLECTIONS", ..] => {
            end(2)?;
            Statement::ShowCollections
        }
        ["SHOW", "INDEXES" | "INDEX", ..] => {
            match upper.get(2) {
                Some(&"FROM") | Some(&"ON") | Some(&"IN") => {}
                Some(_) => {
                    return Err(QueryError::Syntax(format!(
                        "Expected: FROM, found: {} at {}",
                        words[2].1,
                        at(2)
                    )));
                }
                None => {
                    return Err(QueryError::Syntax(format!(
                        "Expected: FROM, found: EOF at {}",
                        at(2)
                    )));
                }
            }
            let n = name(3, "a collection")?;
            end(4)?;
            Statement::ShowIndexes(n)
        }
        _ => return Ok(None),
    };
    Ok(Some(stmt))
}

/// `WITH (shards = N, replicas = M)`, both optional, in any order, each a
/// positive integer. `at` turns an offset in `text` into a position.
fn collection_options(
    text: &str,
    at: impl Fn(usize) -> String,
) -> Result<(Option<u32>, Option<u32>)> {
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while text[*i..].starts_with(char::is_whitespace) {
            *i += text[*i..].chars().next().map_or(1, char::len_utf8);
        }
    };
    let found = |i: usize| -> String {
        let rest = &text[i..];
        let word: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        match (word.is_empty(), rest.chars().next()) {
            (false, _) => word,
            (true, Some(c)) => c.to_string(),
            (true, None) => "EOF".to_string(),
        }
    };
    let expected = |what: &str, i: usize| -> QueryError {
        QueryError::Syntax(format!(
            "Expected: {what}, found: {} at {}",
            found(i),
            at(i)
        ))
    };
    if !text
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("WITH"))
        || text[4..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
    {
        return Err(expected(
            "end of statement or WITH (shards = N, replicas = M)",
            0,
        ));
    }
    i += 4;
    skip_ws(&mut i);
    if !text[i..].starts_with('(') {
        return Err(expected("(", i));
    }
    i += 1;
    let (mut shards, mut replicas) = (None, None);
    loop {
        skip_ws(&mut i);
        let key_at = i;
        let key = found(i);
        let slot = match key.to_ascii_lowercase().as_str() {
            "shards" => &mut shards,
            "replicas" => &mut replicas,
            _ => {
                return Err(QueryError::Syntax(format!(
                    "unknown collection option {key:?} (expected shards or replicas) at {}",
                    at(key_at)
                )));
            }
        };
        if slot.is_some() {
            return Err(QueryError::Syntax(format!(
                "option {key} is given twice at {}",
                at(key_at)
            )));
        }
        i += key.len();
        skip_ws(&mut i);
        if !text[i..].starts_with('=') {
            return Err(expected("=", i));
        }
        i += 1;
        skip_ws(&mut i);
        let value_at = i;
        let value = found(i);
        match value.parse::<u32>() {
            Ok(n) if n > 0 && value.chars().all(|c| c.is_ascii_digit()) => *slot = Some(n),
            _ => {
                return Err(QueryError::Syntax(format!(
                    "{key} must be a positive integer, found: {value} at {}",
                    at(value_at)
                )));
            }
        }
        i += value.len();
        skip_ws(&mut i);
        match text[i..].chars().next() {
            Some(',') => i += 1,
            Some(')') => {
                i += 1;
                break;
            }
            _ => return Err(expected(", or )", i)),
        }
    }
    skip_ws(&mut i);
    if i < text.len() {
        return Err(expected("end of statement", i));
    }
    Ok((shards, replicas))
}

fn words(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if start.is_none() && (c == '"' || c == '`') {
            quote = Some(c);
        }
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

fn unquote(word: &str) -> String {
    for q in ['"', '`'] {
        if word.len() >= 2 && word.starts_with(q) && word.ends_with(q) {
            return word[1..word.len() - 1].to_string();
        }
    }
    word.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_comments() {
        let s = split_statements("a 'x;''y'; /* ; */ b; -- c;\n;  ");
        let texts: Vec<&str> = s.iter().map(|p| p.text.trim()).collect();
        assert_eq!(texts, ["a 'x;''y'", "/* ; */ b"]);
        assert_eq!((s[1].line, s[1].column), (1, 11));
    }

    #[test]
    fn syntax_errors_are_positioned_in_the_script() {
        let err = parse_script("SELECT * FROM t;\n  SELECT * FROM WHERE").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("Line: 2"), "{msg}");
        let err = parse_script("CREATE COLLECTION a b")
            .unwrap_err()
            .to_string();
        assert!(err.contains("found: b at Line: 1, Column: 21"), "{err}");
        let err = parse_script("SELECT * FROM").unwrap_err().to_string();
        assert!(
            err.contains("Expected: identifier, found: EOF at Line: 1, Column: 14"),
            "{err}"
        );
    }

    #[test]
    fn create_collection_options() {
        let create = |sql: &str| match parse_statement(sql) {
            Ok(Statement::CreateCollection {
                name,
                shards,
                replicas,
            }) => Ok((name, shards, replicas)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(create("CREATE COLLECTION c"), Ok(("c".into(), None, None)));
        assert_eq!(
            create("create collection c with (SHARDS = 4, replicas=3)"),
            Ok(("c".into(), Some(4), Some(3)))
        );
        assert_eq!(
            create("CREATE COLLECTION c WITH(replicas = 2)"),
            Ok(("c".into(), None, Some(2)))
        );
        let err = create("CREATE COLLECTION c WITH (shard = 4)").unwrap_err();
        assert!(err.contains("unknown collection option \"shard\""), "{err}");
        assert!(err.contains("Line: 1, Column: 27"), "{err}");
        let err = create("CREATE COLLECTION c WITH (shards = 0)").unwrap_err();
        assert!(
            err.contains("shards must be a positive integer, found: 0"),
            "{err}"
        );
        let err = create("CREATE COLLECTION c WITH (shards = x)").unwrap_err();
        assert!(err.contains("found: x"), "{err}");
        let err = create("CREATE COLLECTION c WITH (shards = -1)").unwrap_err();
        assert!(err.contains("found: -"), "{err}");
        let err = create("CREATE COLLECTION c WITH (shards = 2, shards = 3)").unwrap_err();
        assert!(err.contains("given twice"), "{err}");
        let err = create("CREATE COLLECTION c WITH (shards = 2) x").unwrap_err();
        assert!(
            err.contains("Expected: end of statement, found: x"),
            "{err}"
        );
        let err = create("CREATE COLLECTION c b").unwrap_err();
        assert!(err.contains("found: b at Line: 1, Column: 21"), "{err}");
        let err = create("CREATE COLLECTION c WITH (shards = 2").unwrap_err();
        assert!(err.contains("found: EOF"), "{err}");
    }

    #[test]
    fn positions_count_from_where_the_statement_begins() {
        // The statement begins at line 5, column 10 of some script.
        let at = |sql: &str| parse_statement_at(sql, 5, 10).unwrap_err().to_string();
        let err = at("SELECT * FROM WHERE");
        assert!(err.contains("at Line: 5, Column: 24"), "{err}");
        let err = at("\n  SELECT * FROM WHERE");
        assert!(err.contains("at Line: 6, Column: 17"), "{err}");
        let err = at(" CREATE COLLECTION a b");
        assert!(err.contains("found: b at Line: 5, Column: 31"), "{err}");
        let err = at("SELECT *\nFROM");
        assert!(err.contains("found: EOF at Line: 6, Column: 5"), "{err}");
        assert!(parse_statement_at("SELECT 1; SELECT 2", 1, 1).is_err());
        assert!(parse_statement_at("  SELECT * FROM t", 9, 9).is_ok());
    }
}
