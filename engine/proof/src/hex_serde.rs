//! 32-byte hashes as lower-case hex strings in JSON (a `0x` prefix is accepted
//! when reading), for `#[serde(with = ...)]`.
//!
//! Reading borrows the text where the format allows (serde_json from a slice
//! or a `&str`) and decodes it straight into the 32 bytes: a proof carries
//! some 70 hashes at 1M documents, and a verifying client decodes each one.

use std::fmt;

use serde::de::{self, Visitor};

/// `bytes` in lower-case hex, handed to `f`; up to 64 bytes are written on
/// the stack (`hex::encode` builds a `String` a character at a time, which
/// showed in profiles of a node writing receipts).
pub fn with_hex<R>(bytes: &[u8], f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 128];
    let len = bytes.len() * 2;
    if len <= buf.len()
        && hex::encode_to_slice(bytes, &mut buf[..len]).is_ok()
        && let Ok(text) = std::str::from_utf8(&buf[..len])
    {
        return f(text);
    }
    f(&hex::encode(bytes))
}

/// One hash.
pub mod hash {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        super::with_hex(h, |text| s.serialize_str(text))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        d.deserialize_bytes(super::HashVisitor)
    }
}

/// A list of hashes.
pub mod hash_list {
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(list: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for h in list {
            super::with_hex(h, |text| seq.serialize_element(text))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        d.deserialize_seq(ListVisitor)
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<[u8; 32]>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of 32-byte hashes in hex")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // A 16-ary node has at most 15 siblings; cap what a hint may reserve.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(15).min(64));
            while let Some(super::Hex(h)) = seq.next_element()? {
                out.push(h);
            }
            Ok(out)
        }
    }
}

/// One hash in hex, as a list element.
struct Hex([u8; 32]);

impl<'de> serde::Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(HashVisitor).map(Hex)
    }
}

struct HashVisitor;

impl<'de> Visitor<'de> for HashVisitor {
    type Value = [u8; 32];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 32-byte hash in hex")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<[u8; 32], E> {
        parse(text).map_err(E::custom)
    }

    /// A JSON string read as bytes (its escapes undone) skips the UTF-8
    /// check: only 64 ASCII hex digits are accepted anyway.
    fn visit_bytes<E: de::Error>(self, text: &[u8]) -> Result<[u8; 32], E> {
        parse_bytes(text).ok_or_else(|| E::custom(not_a_hash(&String::from_utf8_lossy(text))))
    }
}

/// Parses 64 hex digits (either case), with or without `0x`.
pub fn parse(text: &str) -> Result<[u8; 32], String> {
    parse_bytes(text.as_bytes()).ok_or_else(|| not_a_hash(text))
}

fn not_a_hash(text: &str) -> String {
    format!("{text:?} is not 32 bytes of hex")
}

fn parse_bytes(text: &[u8]) -> Option<[u8; 32]> {
    let digits = text.strip_prefix(b"0x").unwrap_or(text);
    let digits: &[u8; 64] = digits.try_into().ok()?;
    let mut out = [0u8; 32];
    let mut valid = true;
    for (four, eight) in out.chunks_exact_mut(4).zip(digits.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(eight);
        let (bytes, ok) = decode_8(u64::from_le_bytes(word));
        four.copy_from_slice(&bytes);
        valid &= ok;
    }
    valid.then_some(out)
}

/// Eight hex digits (loaded little-endian: the first digit in the low byte)
/// into four bytes, and whether all eight were hex digits. Each byte lane is
/// handled at once, with no carry from one lane into the next: a lane is
/// checked to be below 0x80 first, and every sum below stays under 0x100.
fn decode_8(w: u64) -> ([u8; 4], bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let ascii = w & HIGH == 0;
    // Lane >= c exactly when lane + (0x80 - c) has its high bit set.
    let at_least = |x: u64, c: u8| x.wrapping_add(ONES * u64::from(0x80 - c)) & HIGH;
    let digit = at_least(w, b'0') & !at_least(w, b'9' + 1);
    let lower = w | (ONES * 0x20);
    let letter = at_least(lower, b'a') & !at_least(lower, b'f' + 1);
    let valid = ascii && (digit | letter) == HIGH;
    // '0'..'9' carry their value in the low nibble; 'a'..'f' and 'A'..'F'
    // carry 1..6, and 9 more makes 10..15.
    let values = (w & (ONES * 0x0F)) + (letter >> 7) * 9;
    // Pairs of lanes (high digit first) into one byte in each 16-bit lane,
    // then the four bytes together.
    let pairs = ((values & 0x000F_000F_000F_000F) << 4) | ((values >> 8) & 0x000F_000F_000F_000F);
    let packed = (pairs | (pairs >> 8)) & 0x0000_FFFF_0000_FFFF;
    let packed = (packed | (packed >> 16)) as u32;
    (packed.to_le_bytes(), valid)
}

#[cfg(test)]
mod tests {
    use super::{decode_8, parse, with_hex};

    proptest::proptest! {
        /// Any eight bytes (not only text): valid exactly when all are hex
        /// digits, and then the bytes `hex` decodes.
        #[test]
        fn eight_bytes_decode_as_hex_does(bytes in proptest::array::uniform8(proptest::prop_oneof![
            proptest::num::u8::ANY,
            proptest::sample::select(b"0123456789abcdefABCDEF".to_vec()),
        ])) {
            let (ours, ok) = decode_8(u64::from_le_bytes(bytes));
            match hex::decode(bytes) {
                Ok(theirs) => {
                    proptest::prop_assert!(ok);
                    proptest::prop_assert_eq!(ours.to_vec(), theirs);
                }
                Err(_) => proptest::prop_assert!(!ok),
            }
        }
    }

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct Both {
        #[serde(with = "super::hash")]
        one: [u8; 32],
        #[serde(with = "super::hash_list")]
        many: Vec<[u8; 32]>,
    }

    #[test]
    fn hashes_round_trip_and_bad_text_is_refused() {
        let both = Both {
            one: [0xab; 32],
            many: vec![[1; 32], [0xfe; 32]],
        };
        let json = serde_json::to_string(&both).unwrap();
        assert_eq!(serde_json::from_str::<Both>(&json).unwrap(), both);
        // From a reader (no borrowing) and with escapes (an owned string).
        let escaped = json.replacen("ab", "\\u0061b", 1);
        assert_eq!(
            serde_json::from_reader::<_, Both>(escaped.as_bytes()).unwrap(),
            both
        );
        // Through a parsed JSON value (what a client holding a whole reply does).
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::from_value::<Both>(value).unwrap(), both);
        let prefixed = json.replacen("\"abab", "\"0xabab", 1);
        assert_eq!(serde_json::from_str::<Both>(&prefixed).unwrap(), both);
        assert_eq!(parse(&"AB".repeat(32)).unwrap(), [0xab; 32]);
        // Every byte value in every position: a hex digit decodes as `hex`
        // decodes it, anything else is refused.
        let good = "0123456789abcdef".repeat(4);
        for at in 0..64 {
            for b in 0..=255u8 {
                let mut text = good.clone().into_bytes();
                text[at] = b;
                let Ok(text) = String::from_utf8(text) else {
                    continue;
                };
                let theirs: Option<[u8; 32]> =
                    hex::decode(&text).ok().map(|v| v.try_into().unwrap());
                assert_eq!(parse(&text).ok(), theirs, "{text:?}");
            }
        }
        for bad in [
            "ab".repeat(31),
            "ab".repeat(33),
            format!("{}a", "ab".repeat(31)),
            format!("{}zz", "ab".repeat(31)),
            format!("0x0x{}", "ab".repeat(31)),
            format!("{}é", "ab".repeat(31)),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
            let json = format!(r#"{{"one":"{bad}","many":[]}}"#);
            assert!(serde_json::from_str::<Both>(&json).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Both>(r#"{"one":7,"many":[]}"#).is_err());
        let list_of_bad = format!(r#"{{"one":"{}","many":["00"]}}"#, "ab".repeat(32));
        assert!(serde_json::from_str::<Both>(&list_of_bad).is_err());
    }

    #[test]
    fn hex_on_the_stack_is_hex_encode_at_every_length() {
        let bytes: Vec<u8> = (0..=70u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..=bytes.len() {
            assert_eq!(
                with_hex(&bytes[..len], str::to_string),
                hex::encode(&bytes[..len])
            );
        }
    }
}
