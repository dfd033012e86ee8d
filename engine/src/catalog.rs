//! Collections and their index definitions, stored in the shard's tree.

use bincode::{Decode, Encode};

use crate::{EngineError, Result};

/// A secondary index as a user declares it.
///
/// `fields` are dotted paths (`address.city`). A path that reaches an array is
/// indexed once per element (a "multikey" index); at most one field of a
/// compound index may be an array in any one document.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct IndexSpec {
    pub name: String,
    pub fields: Vec<String>,
    pub unique: bool,
}

impl IndexSpec {
    /// A non-unique index.
    pub fn new(name: &str, fields: &[&str]) -> Self {
        IndexSpec {
            name: name.to_string(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            unique: false,
        }
    }

    /// The same index, declared UNIQUE.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
}

/// An index as the engine holds it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct IndexInfo {
    pub spec: IndexSpec,
    /// Key-space number, unique within the collection.
    pub number: u32,
    /// Set once any document put more than one entry in the index (an array):
    /// such an index can return a document more than once and cannot give order.
    pub multikey: bool,
}

/// A collection's record in the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct CollectionInfo {
    pub name: String,
    /// Key-space number, unique within the shard (never reused).
    pub number: u32,
    /// Documents in the collection on this shard.
    pub count: u64,
    pub next_index_number: u32,
    /// Indexes that are complete: the ones queries may use.
    pub indexes: Vec<IndexInfo>,
    /// Indexes being built in chunks: writers already maintain their entries,
    /// but documents older than the build's cursor may not be in them yet, so
    /// the planner must not use them (it only sees `indexes`).
    pub building: Vec<IndexBuild>,
}

/// An index under construction and how far its build has come.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct IndexBuild {
    pub index: IndexInfo,
    /// The last `_id` (in key order) whose entries the build wrote; `None`
    /// before the first chunk.
    pub after: Option<String>,
}

impl CollectionInfo {
    /// Every index writers must maintain: the complete ones and those being built.
    pub fn maintained_indexes(&self) -> impl Iterator<Item = &IndexInfo> {
        self.indexes
            .iter()
            .chain(self.building.iter().map(|b| &b.index))
    }

    /// Whether an index of this name exists, complete or being built.
    pub fn has_index(&self, name: &str) -> bool {
        self.maintained_indexes().any(|i| i.spec.name == name)
    }

    pub fn index(&self, name: &str) -> Result<&IndexInfo> {
        self.indexes
            .iter()
            .find(|i| i.spec.name == name)
            .ok_or_else(|| EngineError::IndexNotFound {
                collection: self.name.clone(),
                index: name.to_string(),
            })
    }
}

pub use crate::limits::{MAX_INDEX_FIELDS, MAX_NAME_BYTES};

/// Collection and index names: a letter (of any script) or `_`, then letters,
/// digits (`char::is_alphanumeric`), `_` or `-`; at most [`MAX_NAME_BYTES`] bytes
/// of UTF-8. Names are stored in the catalog only (keys use numbers).
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("name is empty".into()),
        Some(c) if !(c.is_alphabetic() || c == '_') => {
            return Err("name must start with a letter or '_'".into());
        }
        _ => {}
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("name is longer than {MAX_NAME_BYTES} bytes"));
    }
    if !chars.all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
        return Err("name may hold only letters, digits, '_' and '-'".into());
    }
    Ok(())
}

pub(crate) fn encode_info(info: &CollectionInfo) -> Vec<u8> {
    // Encoding a plain struct into a Vec cannot fail.
    bincode::encode_to_vec(info, bincode::config::standard()).unwrap_or_default()
}

pub(crate) fn decode_info(bytes: &[u8]) -> Result<CollectionInfo> {
    bincode::decode_from_slice(bytes, bincode::config::standard())
        .map(|(info, _)| info)
        .map_err(|e| EngineError::Corruption(format!("collection metadata: {e}")))
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn names_may_be_in_any_script() {
        for ok in [
            "users",
            "_tmp",
            "café",
            "Ünïcödé_2",
            "日本語",
            "данные",
            "a-b",
            "x1",
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1abc", "-a", "a b", "a.b", "a;b", "a\"b", "é€", "٣x"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&"é".repeat(65)).is_err(), "over 128 bytes");
        assert!(validate_name(&"é".repeat(64)).is_ok());
    }
}
