//! The storage encoding of a value: compact, type-preserving, and decoded with a
//! depth limit so that hostile bytes (from disk corruption or the network) cannot
//! overflow the stack. This is not the hashed form; that is [`crate::canonical_json`].
//!
//! Layout: one tag byte, then `i64` big-endian for Int, `f64` bits big-endian for
//! Float, a LEB128 length and bytes for String, a LEB128 count and items for
//! Array, a LEB128 count and (key, value) pairs for Object.

use crate::{MAX_NESTING_DEPTH, Object, Value, ValueError};

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const STRING: u8 = 5;
const ARRAY: u8 = 6;
const OBJECT: u8 = 7;

/// Appends the encoding of `value` to `out`.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Int(i) => {
            out.push(INT);
            out.extend_from_slice(&i.to_be_bytes());
        }
        Value::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Value::String(s) => {
            out.push(STRING);
            write_str(s, out);
        }
        Value::Array(items) => {
            out.push(ARRAY);
            write_len(items.len(), out);
            for item in items {
                encode_value(item, out);
            }
        }
        Value::Object(map) => {
            out.push(OBJECT);
            write_len(map.len(), out);
            for (k, v) in map {
                write_str(k, out);
                encode_value(v, out);
            }
        }
    }
}

/// Decodes one value that must span all of `bytes`.
pub fn decode_value(bytes: &[u8]) -> Result<Value, ValueError> {
    let mut reader = Reader { bytes, pos: 0 };
    let value = reader.value(0)?;
    if reader.pos != bytes.len() {
        return Err(ValueError::Corrupt(format!(
            "{} trailing bytes",
            bytes.len() - reader.pos
        )));
    }
    Ok(value)
}

fn write_len(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    write_len(s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ValueError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| ValueError::Corrupt("truncated value".into()))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, ValueError> {
        Ok(self.take(1)?[0])
    }

    fn array8(&mut self) -> Result<[u8; 8], ValueError> {
        let mut out = [0u8; 8];
        out.copy_from_slice(self.take(8)?);
        Ok(out)
    }

    fn len(&mut self) -> Result<usize, ValueError> {
        let mut n: usize = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= ((b & 0x7F) as usize) << shift;
            if b & 0x80 == 0 {
                // A count can never exceed the bytes left: refuse before allocating.
                if n > self.bytes.len() - self.pos {
                    return Err(ValueError::Corrupt(format!("length {n} past the end")));
                }
                return Ok(n);
            }
        }
        Err(ValueError::Corrupt("length too long".into()))
    }

    fn string(&mut self) -> Result<String, ValueError> {
        let n = self.len()?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| ValueError::Corrupt("invalid UTF-8".into()))
    }

    fn value(&mut self, depth: usize) -> Result<Value, ValueError> {
        Ok(match self.byte()? {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => Value::Int(i64::from_be_bytes(self.array8()?)),
            FLOAT => Value::float(f64::from_bits(u64::from_be_bytes(self.array8()?)))
                .map_err(|e| ValueError::Corrupt(e.to_string()))?,
            STRING => Value::String(self.string()?),
            tag @ (ARRAY | OBJECT) => {
                if depth >= MAX_NESTING_DEPTH {
                    return Err(ValueError::TooDeep(MAX_NESTING_DEPTH));
                }
                let n = self.len()?;
                if tag == ARRAY {
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.value(depth + 1)?);
                    }
                    Value::Array(items)
                } else {
                    let mut map = Object::new();
                    for _ in 0..n {
                        let k = self.string()?;
                        let v = self.value(depth + 1)?;
                        map.insert(k, v);
                    }
                    Value::Object(map)
                }
            }
            other => return Err(ValueError::Corrupt(format!("unknown tag {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_types() {
        let v = Value::from_json_str(r#"{"a":[1,1.0,"x",null,true,{"b":-2.5}]}"#).unwrap();
        let mut buf = Vec::new();
        encode_value(&v, &mut buf);
        let back = decode_value(&buf).unwrap();
        assert_eq!(back.to_json_string(), v.to_json_string());
    }

    #[test]
    fn hostile_bytes_are_refused_not_crashed_on() {
        // 100k nested arrays of length 1.
        let mut deep = Vec::new();
        for _ in 0..100_000 {
            deep.extend_from_slice(&[ARRAY, 1]);
        }
        deep.push(NULL);
        assert!(matches!(decode_value(&deep), Err(ValueError::TooDeep(_))));
        // A huge declared length with no bytes behind it.
        assert!(decode_value(&[ARRAY, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).is_err());
        assert!(decode_value(&[42]).is_err());
        assert!(decode_value(&[INT, 1, 2]).is_err());
    }
}

// Values travel inside bincode messages (raft commands) as their own encoding,
// so decoding goes through the depth-limited reader above.
impl bincode::Encode for Value {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        let mut buf = Vec::new();
        encode_value(self, &mut buf);
        bincode::Encode::encode(&buf, encoder)
    }
}

impl<Context> bincode::Decode<Context> for Value {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let bytes: Vec<u8> = bincode::Decode::decode(decoder)?;
        decode_value(&bytes).map_err(|e| bincode::error::DecodeError::OtherString(e.to_string()))
    }
}

bincode::impl_borrow_decode!(Value);
