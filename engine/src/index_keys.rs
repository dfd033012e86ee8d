//! The entries a document puts in an index: one key per combination of the
//! indexed values (an array fans out), in the order-preserving encoding of
//! `keys.rs`, with the `_id` appended unless the index is UNIQUE.

use stratosdb_proof::Value;

use crate::catalog::{CollectionInfo, IndexInfo};
use crate::{EngineError, Result, document, keys};

/// The storage keys of a document's entries in an index, and whether an array
/// was involved. A compound index fans out over at most one array field.
/// UNIQUE applies to entries whose values are all present and non-null (as in
/// SQL, where NULLs are distinct): the others carry the `_id` in their key.
pub(crate) fn index_keys(
    info: &CollectionInfo,
    index: &IndexInfo,
    id: &str,
    doc: &Value,
) -> Result<(Vec<Vec<u8>>, bool)> {
    let mut per_field = Vec::with_capacity(index.spec.fields.len());
    let mut multikey = false;
    let mut fanned_fields = Vec::new();
    for field in &index.spec.fields {
        let path = document::parse_path(field)?;
        let (values, fanned) = document::path_values_and_fanout(doc, &path);
        if values.len() > 1 {
            fanned_fields.push(field.clone());
        }
        multikey |= fanned;
        per_field.push(values);
    }
    if fanned_fields.len() > 1 {
        return Err(EngineError::ParallelArrays(fanned_fields));
    }
    let prefix = keys::index_prefix(info.number, index.number);
    let mut out: Vec<Vec<u8>> = vec![prefix];
    let mut nullish = vec![false];
    for values in &per_field {
        let mut next = Vec::with_capacity(out.len() * values.len());
        let mut next_nullish = Vec::with_capacity(out.len() * values.len());
        for (key, null) in out.iter().zip(&nullish) {
            for v in values {
                let mut k = key.clone();
                keys::encode_index_value(*v, &mut k);
                next.push(k);
                next_nullish.push(*null || matches!(v, None | Some(Value::Null)));
            }
        }
        out = next;
        nullish = next_nullish;
    }
    for (key, null) in out.iter_mut().zip(&nullish) {
        if !index.spec.unique || *null {
            key.extend_from_slice(id.as_bytes());
        }
    }
    out.sort();
    out.dedup();
    Ok((out, multikey))
}

pub(crate) fn unique_key_display(index: &IndexInfo, doc: &Value) -> String {
    let parts: Vec<String> = index
        .spec
        .fields
        .iter()
        .map(|f| {
            let path = document::parse_path(f).unwrap_or_default();
            let values = document::path_values(doc, &path);
            let shown: Vec<String> = values
                .iter()
                .map(|v| v.map_or("missing".to_string(), |v| v.to_json_string()))
                .collect();
            format!("{f}={}", shown.join("|"))
        })
        .collect();
    parts.join(", ")
}
