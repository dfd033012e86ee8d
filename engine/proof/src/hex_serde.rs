//! 32-byte hashes as lower-case hex strings in JSON (a `0x` prefix is accepted
//! when reading), for `#[serde(with = ...)]`.

/// One hash.
pub mod hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        super::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A list of hashes.
pub mod hash_list {
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(list: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for h in list {
            seq.serialize_element(&hex::encode(h))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| super::parse(text).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Parses 64 hex digits, with or without `0x`.
pub fn parse(text: &str) -> Result<[u8; 32], String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    hex::decode(digits)
        .map_err(|e| format!("{text:?} is not hex: {e}"))?
        .try_into()
        .map_err(|_| format!("{text:?} is not 32 bytes of hex"))
}
