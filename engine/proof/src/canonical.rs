//! The canonical JSON form that document hashes are computed over: RFC 8785
//! (JSON Canonicalization Scheme), so a verifier in any language can reproduce it.
//!
//! One documented extension: integers beyond ±2^53 are written with all their
//! digits (RFC 8785 would first round them to an IEEE double). Within ±2^53 the
//! output is exactly RFC 8785's. See `docs/merkle.md`.

use crate::Value;

/// The RFC 8785 canonical bytes of a value.
///
/// ```
/// use stratosdb_proof::{canonical_json, Value};
/// let v = Value::from_json_str(r#"{"b": [1.0, "é"], "a": 1e21}"#).unwrap();
/// assert_eq!(canonical_json(&v), r#"{"a":1e+21,"b":[1,"é"]}"#.as_bytes());
/// ```
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => write_int(*i, out),
        Value::Float(f) => {
            // ECMAScript Number.prototype.toString, as RFC 8785 requires.
            let mut buf = ryu_js::Buffer::new();
            out.extend_from_slice(buf.format_finite(*f).as_bytes());
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // RFC 8785 sorts keys by their UTF-16 code units, which differs from
            // the map's byte order only for characters above U+FFFF (4 UTF-8
            // bytes, lead byte 0xF0 or more).
            out.push(b'{');
            if map.keys().any(|k| k.bytes().any(|b| b >= 0xF0)) {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                write_members(entries, out);
            } else {
                write_members(map.iter(), out);
            }
            out.push(b'}');
        }
    }
}

fn write_members<'a>(
    members: impl IntoIterator<Item = (&'a String, &'a Value)>,
    out: &mut Vec<u8>,
) {
    for (n, (key, value)) in members.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_value(value, out);
    }
}

/// All the digits of an integer, as `i64::to_string` writes them.
fn write_int(i: i64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = i.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if i < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    // Copy runs of bytes that need no escape at once (most text is one run).
    let mut run_start = 0;
    for (at, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0C => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..at]);
        run_start = at + 1;
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xF) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        String::from_utf8(canonical_json(&Value::from_json_str(text).unwrap())).unwrap()
    }

    proptest::proptest! {
        /// RFC 8785 escapes strings as ECMAScript's JSON.stringify does, which
        /// is also what serde_json writes: it serves as the oracle.
        #[test]
        fn strings_are_escaped_as_json_stringify_does(s in "(?s).{0,40}|[\\x00-\\x20\"\\\\/a-z\u{e9}\u{1f600}]{0,40}") {
            let mut ours = Vec::new();
            write_string(&s, &mut ours);
            let expected = serde_json::to_string(&s).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), expected);
        }
    }

    proptest::proptest! {
        #[test]
        fn integers_are_written_as_to_string_does(i in proptest::num::i64::ANY) {
            let mut ours = Vec::new();
            write_int(i, &mut ours);
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), i.to_string());
        }
    }

    #[test]
    fn integer_limits() {
        for i in [0, 1, -1, 9, 10, -10, i64::MAX, i64::MIN, i64::MIN + 1] {
            let mut ours = Vec::new();
            write_int(i, &mut ours);
            assert_eq!(String::from_utf8(ours).unwrap(), i.to_string());
        }
    }

    #[test]
    fn rfc8785_number_examples() {
        // From RFC 8785 appendix B (values representable as finite doubles).
        assert_eq!(canon("0.0"), "0");
        assert_eq!(canon("-0.0"), "0");
        assert_eq!(canon("5e-324"), "5e-324");
        assert_eq!(canon("1.7976931348623157e308"), "1.7976931348623157e+308");
        assert_eq!(canon("9007199254740992"), "9007199254740992");
        assert_eq!(canon("1e21"), "1e+21");
        assert_eq!(canon("1e20"), "100000000000000000000");
        assert_eq!(canon("0.000001"), "0.000001");
        assert_eq!(canon("0.0000001"), "1e-7");
    }

    #[test]
    fn rfc8785_string_and_key_order() {
        assert_eq!(canon(r#""\u0001\n\"\\/€""#), r#""\u0001\n\"\\/€""#);
        // RFC 8785 section 3.2.3: sorting by UTF-16 code units.
        assert_eq!(
            canon(r#"{"\u20ac":1,"\r":2,"\ud83d\ude00":3,"1":4,"\u00f6":5,"\ufb33":6}"#),
            "{\"\\r\":2,\"1\":4,\"\u{f6}\":5,\"\u{20ac}\":1,\"\u{1f600}\":3,\"\u{fb33}\":6}"
        );
    }
}
