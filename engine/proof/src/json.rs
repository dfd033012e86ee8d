//! JSON text to [`Value`]: a strict RFC 8259 reader that refuses what a document
//! store must not guess about.
//!
//! - A key repeated in one object is an error naming the key and the object's
//!   path (JSON leaves duplicates undefined; taking the last silently would hash
//!   and index something the writer may not have meant).
//! - Nesting deeper than [`MAX_NESTING_DEPTH`] is an error. The reader keeps its
//!   own stack of open containers, so no input can overflow the thread's stack.
//! - `NaN`, `Infinity` and `-Infinity` are named as what they are: not JSON.
//! - Lone UTF-16 surrogates in `\u` escapes are refused (a Rust string cannot
//!   hold them), and so are bytes that are not UTF-8 when reading bytes.
//! - Integers beyond the i64 range are refused rather than rounded; floats that
//!   overflow (`1e999`) are refused.
//!
//! Numbers are converted by serde_json, token by token, so a value parses to the
//! same bits it always did. Every error says where: line and column (1-based,
//! the column counted in characters).

use crate::{MAX_NESTING_DEPTH, Object, Value, ValueError};

/// Parses one JSON value spanning all of `bytes` (whitespace around allowed).
pub(crate) fn parse(bytes: &[u8]) -> Result<Value, ValueError> {
    Reader { bytes, pos: 0 }.document()
}

/// A container being read: its items so far, and for an object the key whose
/// value comes next.
enum Open {
    Array(Vec<Value>),
    Object { map: Object, key: String },
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn document(&mut self) -> Result<Value, ValueError> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            let mut value = match self.value_or_open(&mut open)? {
                Some(v) => v,
                None => continue,
            };
            // Hand the finished value to the containers it closes, innermost first.
            loop {
                let Some(mut frame) = open.pop() else {
                    self.skip_ws();
                    if self.pos < self.bytes.len() {
                        return Err(self.error_here("unexpected characters after the value"));
                    }
                    return Ok(value);
                };
                let closed = match &mut frame {
                    Open::Array(items) => {
                        items.push(value);
                        self.next_structural(b']', "`,` or `]` after an array element")?
                    }
                    Open::Object { map, key } => {
                        map.insert(std::mem::take(key), value);
                        self.next_structural(b'}', "`,` or `}` after an object member")?
                    }
                };
                if closed {
                    value = match frame {
                        Open::Array(items) => Value::Array(items),
                        Open::Object { map, .. } => Value::Object(map),
                    };
                    continue;
                }
                let is_object = matches!(frame, Open::Object { .. });
                open.push(frame);
                if is_object {
                    self.next_key(&mut open)?;
                }
                break;
            }
        }
    }

    /// Reads the next key of the innermost open object into its slot.
    fn next_key(&mut self, open: &mut [Open]) -> Result<(), ValueError> {
        let key = self.key(open)?;
        if let Some(Open::Object { key: slot, .. }) = open.last_mut() {
            *slot = key;
        }
        Ok(())
    }

    /// Reads a scalar, an empty container, or the opening of a non-empty one
    /// (pushed on `open`, and `None` returned: its first element comes next).
    fn value_or_open(&mut self, open: &mut Vec<Open>) -> Result<Option<Value>, ValueError> {
        self.skip_ws();
        let Some(&b) = self.bytes.get(self.pos) else {
            return Err(self.error_here("unexpected end of input, expected a value"));
        };
        let value = match b {
            b'[' | b'{' => {
                if open.len() >= MAX_NESTING_DEPTH {
                    return Err(
                        self.error_here(&format!("nested deeper than {MAX_NESTING_DEPTH} levels"))
                    );
                }
                self.pos += 1;
                self.skip_ws();
                let close = if b == b'[' { b']' } else { b'}' };
                if self.bytes.get(self.pos) == Some(&close) {
                    self.pos += 1;
                    return Ok(Some(if b == b'[' {
                        Value::Array(Vec::new())
                    } else {
                        Value::Object(Object::new())
                    }));
                }
                if b == b'[' {
                    open.push(Open::Array(Vec::new()));
                } else {
                    open.push(Open::Object {
                        map: Object::new(),
                        key: String::new(),
                    });
                    self.next_key(open)?;
                }
                return Ok(None);
            }
            b'"' => Value::String(self.string()?),
            b'-' | b'0'..=b'9' => self.number()?,
            b't' => self.literal("true", Value::Bool(true))?,
            b'f' => self.literal("false", Value::Bool(false))?,
            b'n' => self.literal("null", Value::Null)?,
            b'N' | b'I' => return Err(self.not_a_number()),
            _ => return Err(self.error_here(&format!("expected a value, found {}", self.found()))),
        };
        Ok(Some(value))
    }

    /// After a member: `,` (returns false: another member follows) or `close`
    /// (returns true: the container is complete).
    fn next_structural(&mut self, close: u8, expected: &str) -> Result<bool, ValueError> {
        self.skip_ws();
        match self.bytes.get(self.pos) {
            Some(b',') => {
                self.pos += 1;
                Ok(false)
            }
            Some(&b) if b == close => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(self.error_here(&format!("expected {expected}, found {}", self.found()))),
        }
    }

    /// An object key and its `:`; a key already in the innermost object is refused.
    fn key(&mut self, open: &[Open]) -> Result<String, ValueError> {
        self.skip_ws();
        if self.bytes.get(self.pos) != Some(&b'"') {
            return Err(self.error_here(&format!("expected a string key, found {}", self.found())));
        }
        let at = self.pos;
        let key = self.string()?;
        if let Some(Open::Object { map, .. }) = open.last()
            && map.contains_key(&key)
        {
            let (line, column) = self.line_column(at);
            return Err(ValueError::DuplicateKey {
                key,
                path: object_path(open),
                line,
                column,
            });
        }
        self.skip_ws();
        if self.bytes.get(self.pos) != Some(&b':') {
            return Err(self.error_here(&format!(
                "expected `:` after an object key, found {}",
                self.found()
            )));
        }
        self.pos += 1;
        Ok(key)
    }

    /// A string literal, the reader on its opening quote.
    fn string(&mut self) -> Result<String, ValueError> {
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let run_start = self.pos;
            while let Some(&b) = self.bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            let run = &self.bytes[run_start..self.pos];
            if let Err(e) = std::str::from_utf8(run) {
                let at = run_start + e.valid_up_to();
                return Err(self.error_at(at, "a string holds bytes that are not UTF-8"));
            }
            out.extend_from_slice(run);
            match self.bytes.get(self.pos) {
                None => return Err(self.error_here("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(&b) => {
                    return Err(self.error_here(&format!(
                        "control character U+{b:04X} must be escaped in a string"
                    )));
                }
            }
        }
        // Every run was UTF-8 and every escape pushed a whole character.
        String::from_utf8(out).map_err(|_| self.error_here("a string is not UTF-8"))
    }

    /// One escape sequence, the reader on its backslash.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), ValueError> {
        let at = self.pos;
        self.pos += 1;
        let Some(&b) = self.bytes.get(self.pos) else {
            return Err(self.error_here("unterminated string"));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4(at)?;
                match unit {
                    0xD800..=0xDBFF => {
                        let low = if self.bytes[self.pos..].starts_with(b"\\u") {
                            self.pos += 2;
                            Some(self.hex4(at)?)
                        } else {
                            None
                        };
                        match low {
                            Some(low @ 0xDC00..=0xDFFF) => {
                                let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                                char::from_u32(code)
                                    .ok_or_else(|| self.error_at(at, "invalid \\u escape"))?
                            }
                            _ => {
                                return Err(self.error_at(
                                    at,
                                    &format!(
                                        "lone surrogate \\u{unit:04x} (not followed by a low surrogate); \
                                         JSON text must be valid Unicode"
                                    ),
                                ));
                            }
                        }
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.error_at(
                            at,
                            &format!(
                                "lone surrogate \\u{unit:04x} (no high surrogate before it); \
                                 JSON text must be valid Unicode"
                            ),
                        ));
                    }
                    _ => char::from_u32(unit)
                        .ok_or_else(|| self.error_at(at, "invalid \\u escape"))?,
                }
            }
            _ => {
                return Err(self.error_at(at, &format!("invalid escape \\{}", printable(b))));
            }
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self, escape_at: usize) -> Result<u32, ValueError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok());
        match digits {
            Some(unit) => {
                self.pos += 4;
                Ok(unit)
            }
            None => Err(self.error_at(escape_at, "a \\u escape needs four hex digits")),
        }
    }

    /// A number: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Result<Value, ValueError> {
        let start = self.pos;
        if self.bytes[self.pos] == b'-' {
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'I' | b'N')) {
                self.pos = start;
                return Err(self.not_a_number());
            }
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error_here("a number needs a digit after `-`")),
        }
        let mut integer = true;
        if self.bytes.get(self.pos) == Some(&b'.') {
            integer = false;
            self.pos += 1;
            if !matches!(self.bytes.get(self.pos), Some(b'0'..=b'9')) {
                return Err(self.error_here("a number needs a digit after `.`"));
            }
            self.digits();
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.bytes.get(self.pos), Some(b'0'..=b'9')) {
                return Err(self.error_here("a number needs a digit in its exponent"));
            }
            self.digits();
        }
        if matches!(self.bytes.get(self.pos), Some(b'0'..=b'9')) {
            return Err(self.error_here("a number cannot have a leading zero"));
        }
        // The token is ASCII: it was matched byte by byte above.
        let token = std::str::from_utf8(&self.bytes[start..self.pos]).unwrap_or_default();
        if integer {
            // serde_json reads `-0` as the float -0.0; keep that.
            if token == "-0" {
                return Ok(Value::Float(-0.0));
            }
            return token
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|_| ValueError::IntegerOutOfRange(token.to_string()));
        }
        match serde_json::from_str::<f64>(token) {
            Ok(f) if f.is_finite() => Ok(Value::Float(f)),
            _ => Err(self.error_at(
                start,
                &format!("number {token} is out of the 64-bit float range"),
            )),
        }
    }

    fn digits(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, ValueError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error_here(&format!("expected a value, found {}", self.found())))
        }
    }

    /// The error for `NaN`, `Infinity`, `-Infinity` (or a start of one).
    fn not_a_number(&self) -> ValueError {
        let rest = &self.bytes[self.pos..];
        let word = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|w| rest.starts_with(w.as_bytes()));
        match word {
            Some(w) => self.error_here(&format!(
                "{w} is not a JSON value; JSON has no NaN or infinity"
            )),
            None => self.error_here(&format!("expected a value, found {}", self.found())),
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// What is at the reader's position, for messages.
    fn found(&self) -> String {
        match self.bytes.get(self.pos) {
            None => "the end of the input".to_string(),
            Some(&b) => format!("`{}`", printable(b)),
        }
    }

    fn error_here(&self, message: &str) -> ValueError {
        self.error_at(self.pos, message)
    }

    fn error_at(&self, at: usize, message: &str) -> ValueError {
        let (line, column) = self.line_column(at);
        ValueError::InvalidJson(format!("{message} at line {line}, column {column}"))
    }

    /// 1-based line and column (in characters: UTF-8 continuation bytes are
    /// not counted) of a byte offset.
    fn line_column(&self, at: usize) -> (usize, usize) {
        let before = &self.bytes[..at.min(self.bytes.len())];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before[line_start..]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count()
            + 1;
        (line, column)
    }
}

/// A byte for a message: itself if printable ASCII, else its hex code.
fn printable(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        (b as char).to_string()
    } else {
        format!("byte 0x{b:02X}")
    }
}

/// The path of the innermost open object, in the dialect's notation
/// (`a.items[2]`; a key that is not a plain name is quoted). Empty for the
/// top-level value.
fn object_path(open: &[Open]) -> String {
    let mut path = String::new();
    // The last entry is the object itself; each outer one says how to reach the next.
    for frame in &open[..open.len().saturating_sub(1)] {
        match frame {
            Open::Array(items) => path.push_str(&format!("[{}]", items.len())),
            Open::Object { key, .. } => {
                let plain = key
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphabetic() || c == '_')
                    && key.chars().all(|c| c.is_alphanumeric() || c == '_');
                if !path.is_empty() {
                    path.push('.');
                }
                if plain {
                    path.push_str(key);
                } else {
                    path.push_str(&format!("{key:?}"));
                }
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::{MAX_NESTING_DEPTH, Value, ValueError, encode_value};

    fn err(text: &str) -> String {
        Value::from_json_str(text).unwrap_err().to_string()
    }

    /// The old path: serde_json, then the conversion.
    fn via_serde(text: &str) -> Option<Value> {
        serde_json::from_str(text)
            .ok()
            .and_then(|j| Value::from_json(j).ok())
    }

    fn bits(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(v, &mut out);
        out
    }

    #[test]
    fn reads_every_kind_of_value() {
        let v = Value::from_json_str(
            " {\"a\" : [1, -2, 1.5, -0, 0.0, 1e2, true, false, null],\n\"s\":\"\\u00e9\\ud83d\\ude00\\n\\\"\\/\", \"o\":{}, \"e\":[]} ",
        )
        .unwrap();
        assert_eq!(
            v.to_json_string(),
            r#"{"a":[1,-2,1.5,-0.0,0.0,100.0,true,false,null],"e":[],"o":{},"s":"é😀\n\"/"}"#
        );
    }

    #[test]
    fn duplicate_keys_are_named_with_their_path() {
        let e = Value::from_json_str(r#"{"a":1,"a":2}"#).unwrap_err();
        assert_eq!(
            e,
            ValueError::DuplicateKey {
                key: "a".into(),
                path: String::new(),
                line: 1,
                column: 8
            }
        );
        assert_eq!(
            e.to_string(),
            r#"invalid JSON: duplicate key "a" in the top-level object at line 1, column 8"#
        );
        let e =
            Value::from_json_str("{\"items\": [{\"sku\": 1}, {\"x.y\": {\"k\": 1,\n \"k\": 2}}]}")
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid JSON: duplicate key "k" in the object at items[1]."x.y" at line 2, column 2"#
        );
        // The same key in different objects is fine; so is a key equal to a value.
        assert!(Value::from_json_str(r#"{"a":{"a":"a"},"b":[{"a":1},{"a":2}]}"#).is_ok());
        // Keys compare after unescaping.
        assert!(matches!(
            Value::from_json_str(r#"{"é":1,"\u00e9":2}"#),
            Err(ValueError::DuplicateKey { key, .. }) if key == "é"
        ));
        // Through serde too.
        let e = serde_json::from_str::<Value>(r#"{"a":{"b":1,"b":2}}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key \"b\""), "{e}");
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_NESTING_DEPTH),
            "]".repeat(MAX_NESTING_DEPTH)
        );
        assert_eq!(
            Value::from_json_str(&ok).unwrap().depth(),
            MAX_NESTING_DEPTH
        );
        let deeper = format!("{{\"a\":{}", "[".repeat(MAX_NESTING_DEPTH));
        assert_eq!(
            err(&deeper),
            "invalid JSON: nested deeper than 100 levels at line 1, column 105"
        );
        // Far deeper than any stack could recurse: the error comes at once, and
        // from a small stack.
        let hostile = "[".repeat(1_000_000);
        let e = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || err(&hostile))
            .unwrap()
            .join()
            .unwrap();
        assert!(e.contains("nested deeper than 100 levels"), "{e}");
        // from_json refuses deep serde_json values too, and drops them flat.
        let mut deep = serde_json::Value::Null;
        for _ in 0..100_000 {
            deep = serde_json::Value::Array(vec![deep]);
        }
        let e = std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || Value::from_json(deep).unwrap_err())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(e, ValueError::TooDeep(MAX_NESTING_DEPTH));
    }

    #[test]
    fn nan_and_infinity_are_named() {
        for (text, word, column) in [
            ("NaN", "NaN", 1),
            ("[1, Infinity]", "Infinity", 5),
            ("{\"x\": -Infinity}", "-Infinity", 7),
        ] {
            assert_eq!(
                err(text),
                format!(
                    "invalid JSON: {word} is not a JSON value; JSON has no NaN or infinity at line 1, column {column}"
                )
            );
        }
        assert!(err("nan").contains("expected a value, found `n`"));
        assert!(err("-Inf").contains("expected a value"));
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        assert_eq!(
            Value::from_json_str("-9223372036854775808").unwrap(),
            Value::Int(i64::MIN)
        );
        for big in [
            "9223372036854775808",
            "18446744073709551616",
            "-9223372036854775809",
            &"9".repeat(400),
        ] {
            assert_eq!(
                Value::from_json_str(big),
                Err(ValueError::IntegerOutOfRange(big.to_string()))
            );
        }
        assert_eq!(
            err("[1e999]"),
            "invalid JSON: number 1e999 is out of the 64-bit float range at line 1, column 2"
        );
        assert!(err("-1e400").contains("out of the 64-bit float range"));
        // Tiny numbers round to zero, as floats do.
        assert_eq!(
            Value::from_json_str("1e-400").unwrap().to_json_string(),
            "0.0"
        );
        for bad in ["01", "1.", ".5", "1e", "-", "+1", "1e+", "0x10"] {
            assert!(err(bad).starts_with("invalid JSON: "), "{bad}");
        }
    }

    #[test]
    fn lone_surrogates_and_bad_escapes_are_refused() {
        assert_eq!(
            err(r#"["\ud800"]"#),
            "invalid JSON: lone surrogate \\ud800 (not followed by a low surrogate); JSON text must be valid Unicode at line 1, column 3"
        );
        assert!(err(r#""\ud800\u0041""#).contains("lone surrogate \\ud800"));
        assert!(err(r#""\udc00""#).contains("lone surrogate \\udc00 (no high surrogate"));
        assert!(err(r#""\u12""#).contains("four hex digits"));
        assert!(err(r#""\x""#).contains("invalid escape \\x"));
        assert!(err("\"a\nb\"").contains("control character U+000A"));
        assert!(err("\"abc").contains("unterminated string"));
        assert!(err("\"abc\\").contains("unterminated string"));
    }

    #[test]
    fn bytes_must_be_utf8() {
        let e = Value::from_json_slice(b"{\"a\":\"\xc3\xa9\xff\"}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid JSON: a string holds bytes that are not UTF-8 at line 1, column 8"
        );
        let e = Value::from_json_slice(b"[1,\xff]").unwrap_err();
        assert!(e.to_string().contains("found `byte 0xFF`"), "{e}");
        let e = Value::from_json_slice(b"[1]\x00").unwrap_err();
        assert!(e.to_string().contains("after the value"), "{e}");
        // A truncated multi-byte character.
        assert!(Value::from_json_slice(b"\"\xe2\x82\"").is_err());
        assert_eq!(
            Value::from_json_slice("\"€\"".as_bytes()).unwrap(),
            Value::from("€")
        );
    }

    #[test]
    fn structural_errors_say_where() {
        assert_eq!(
            err("{\"a\":\n  [1 2]}"),
            "invalid JSON: expected `,` or `]` after an array element, found `2` at line 2, column 6"
        );
        assert!(err("").contains("unexpected end of input"));
        assert!(err("{\"a\":").contains("unexpected end of input"));
        assert!(err("{\"a\" 1}").contains("expected `:`"));
        assert!(err("{1:2}").contains("expected a string key"));
        assert!(err("[1,]").contains("expected a value, found `]`"));
        assert!(err("{\"a\":1,}").contains("expected a string key, found `}`"));
        assert!(err("[1] [2]").contains("unexpected characters after the value"));
        assert!(err("tru").contains("expected a value"));
    }

    /// JSON-ish text: the structural characters, literals and escapes, often
    /// valid, often not.
    fn jsonish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just("\"".to_string()),
            Just("\"k\"".to_string()),
            Just("\"\\u00e9\"".to_string()),
            Just("\"\\ud83d\\ude00\"".to_string()),
            Just("\\".to_string()),
            Just(" ".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("NaN".to_string()),
            Just("-".to_string()),
            Just(".".to_string()),
            Just("e".to_string()),
            "-?[0-9]{1,25}(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            "\"[a-c\\\\]{0,3}\"",
        ];
        prop::collection::vec(piece, 0..30).prop_map(|p| p.concat())
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z]{0,3}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Where serde_json and this reader both accept, they agree bit for bit;
        /// where only one accepts, it is for one of the documented refusals.
        #[test]
        fn agrees_with_serde_json(text in jsonish()) {
            let ours = Value::from_json_str(&text);
            match (&ours, via_serde(&text)) {
                (Ok(v), Some(w)) => prop_assert_eq!(bits(v), bits(&w)),
                (Ok(v), None) => prop_assert!(false, "{text:?} read as {v} but serde_json refuses it"),
                (Err(e), Some(_)) => prop_assert!(
                    matches!(e, ValueError::DuplicateKey { .. } | ValueError::IntegerOutOfRange(_)),
                    "{text:?}: {e}"
                ),
                (Err(e), None) => prop_assert!(e.to_string().starts_with("invalid JSON: ")
                    || matches!(e, ValueError::IntegerOutOfRange(_)), "{text:?}: {e}"),
            }
        }

        /// Any serialized value reads back to what serde_json reads.
        #[test]
        fn round_trips_serde_json_output(json in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&json).unwrap()
            } else {
                json.to_string()
            };
            let ours = Value::from_json_str(&text).unwrap();
            prop_assert_eq!(bits(&ours), bits(&via_serde(&text).unwrap()));
        }

        /// Arbitrary bytes never panic, and every refusal is an error with a position.
        #[test]
        fn arbitrary_bytes_are_refused_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Err(e) = Value::from_json_slice(&bytes) {
                let msg = e.to_string();
                prop_assert!(msg.contains(" at line ") || matches!(e, ValueError::IntegerOutOfRange(_)), "{msg}");
            }
        }
    }
}
