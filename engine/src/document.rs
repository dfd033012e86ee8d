//! Rules for documents: validation against the limits, `_id`s, dotted paths,
//! patches, and the values an index takes from a document.

use stratosdb_proof::{Object, Value, encode_value};

use crate::{EngineError, Limits, PatchChange, Result};

/// Checks a document and returns its storage encoding and `_id`.
pub(crate) fn validate(doc: &Value, limits: &Limits) -> Result<(String, Vec<u8>)> {
    let Value::Object(map) = doc else {
        return Err(EngineError::InvalidDocument(format!(
            "a document must be a JSON object, not {}",
            doc.type_name()
        )));
    };
    let id = match map.get("_id") {
        Some(Value::String(id)) => id.clone(),
        Some(other) => {
            return Err(EngineError::InvalidId {
                got: format!("a value of type {}", other.type_name()),
                max: limits.max_id_bytes,
            });
        }
        None => {
            return Err(EngineError::InvalidDocument(
                "the document has no _id".into(),
            ));
        }
    };
    validate_id(&id, limits)?;
    let depth = doc.depth();
    let max_depth = limits.max_depth.min(stratosdb_proof::MAX_NESTING_DEPTH);
    if depth > max_depth {
        return Err(EngineError::DocumentTooDeep {
            depth,
            limit: max_depth,
        });
    }
    let mut bytes = Vec::with_capacity(256);
    encode_value(doc, &mut bytes);
    if bytes.len() > limits.max_document_bytes {
        return Err(EngineError::DocumentTooLarge {
            size: bytes.len(),
            limit: limits.max_document_bytes,
        });
    }
    Ok((id, bytes))
}

pub(crate) fn validate_id(id: &str, limits: &Limits) -> Result<()> {
    if id.is_empty() || id.len() > limits.max_id_bytes {
        return Err(EngineError::InvalidId {
            got: format!("a string of {} bytes", id.len()),
            max: limits.max_id_bytes,
        });
    }
    Ok(())
}

/// Gives the document a fresh time-ordered `_id` (a ULID) if it has none.
/// Ids from one process increase strictly, even within a millisecond.
pub(crate) fn assign_id(doc: &mut Value) {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    if let Value::Object(map) = doc
        && !map.contains_key("_id")
    {
        let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        // The generator fails only after 2^80 ids in one millisecond; a random
        // ULID is still unique then, just not ordered.
        let id = generator.generate().unwrap_or_else(|_| ulid::Ulid::new());
        map.insert("_id".into(), Value::String(id.to_string()));
    }
}

/// Splits a dotted path, refusing empty segments.
pub fn parse_path(path: &str) -> Result<Vec<String>> {
    let segments: Vec<String> = path.split('.').map(str::to_string).collect();
    if segments.iter().any(String::is_empty) {
        return Err(EngineError::InvalidPath {
            path: path.to_string(),
            reason: "empty segment".into(),
        });
    }
    Ok(segments)
}

/// The values a dotted path reaches in a document, as an index sees them:
/// an array met on the way fans out over its elements (one level), and an array
/// at the end yields each element (an empty array yields itself). `None` is
/// "missing". Query evaluation uses the same rule, so index scans and full
/// scans agree.
///
/// ```
/// use stratosdb_engine::{path_values, Value};
/// let doc = Value::from_json_str(r#"{"items":[{"sku":"a"},{"sku":"b"}],"tags":[]}"#).unwrap();
/// let skus: Vec<_> = path_values(&doc, &["items".into(), "sku".into()]);
/// assert_eq!(skus, vec![Some(&Value::from("a")), Some(&Value::from("b"))]);
/// assert_eq!(path_values(&doc, &["nope".into()]), vec![None]);
/// ```
pub fn path_values<'a>(doc: &'a Value, path: &[String]) -> Vec<Option<&'a Value>> {
    path_values_and_fanout(doc, path).0
}

/// [`path_values`], and whether an array was met (then the index is multikey).
pub(crate) fn path_values_and_fanout<'a>(
    doc: &'a Value,
    path: &[String],
) -> (Vec<Option<&'a Value>>, bool) {
    let mut out = Vec::new();
    let fanned_out = collect_path_values(doc, path, false, &mut out);
    if out.is_empty() {
        out.push(None);
    }
    (out, fanned_out)
}

fn collect_path_values<'a>(
    value: &'a Value,
    path: &[String],
    inside_array: bool,
    out: &mut Vec<Option<&'a Value>>,
) -> bool {
    match (path.split_first(), value) {
        (None, Value::Array(items)) if !inside_array => {
            if items.is_empty() {
                out.push(Some(value));
            } else {
                out.extend(items.iter().map(Some));
            }
            true
        }
        (None, _) => {
            out.push(Some(value));
            false
        }
        (Some((field, rest)), Value::Object(map)) => match map.get(field) {
            Some(v) => collect_path_values(v, rest, inside_array, out),
            None => {
                out.push(None);
                false
            }
        },
        (Some(_), Value::Array(items)) if !inside_array => {
            for item in items {
                collect_path_values(item, path, true, out);
            }
            true
        }
        (Some(_), _) => {
            out.push(None);
            false
        }
    }
}

/// Applies patch changes to a copy of the document.
pub(crate) fn apply_patch(doc: &Value, changes: &[PatchChange]) -> Result<Value> {
    let mut doc = doc.clone();
    for change in changes {
        let path = match change {
            PatchChange::Set { path, .. } | PatchChange::Unset { path } => path,
        };
        let segments = parse_path(path)?;
        if segments[0] == "_id" {
            return Err(EngineError::InvalidPath {
                path: path.clone(),
                reason: "_id cannot be changed".into(),
            });
        }
        match change {
            PatchChange::Set { value, .. } => set_path(&mut doc, &segments, value.clone(), path)?,
            PatchChange::Unset { .. } => unset_path(&mut doc, &segments),
        }
    }
    Ok(doc)
}

fn set_path(doc: &mut Value, segments: &[String], value: Value, full: &str) -> Result<()> {
    let conflict = |reason: String| EngineError::InvalidPath {
        path: full.to_string(),
        reason,
    };
    let (last, parents) = segments
        .split_last()
        .ok_or_else(|| conflict("empty path".into()))?;
    let mut cur = doc;
    for seg in parents {
        cur = match cur {
            Value::Object(map) => map
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Object::new())),
            Value::Array(items) => {
                let len = items.len();
                seg.parse::<usize>()
                    .ok()
                    .and_then(|i| items.get_mut(i))
                    .ok_or_else(|| conflict(format!("no element {seg} in an array of {len}")))?
            }
            other => {
                return Err(conflict(format!(
                    "{seg:?} is inside a {}, not an object",
                    other.type_name()
                )));
            }
        };
    }
    match cur {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            let len = items.len();
            let slot = last
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get_mut(i))
                .ok_or_else(|| conflict(format!("no element {last} in an array of {len}")))?;
            *slot = value;
        }
        other => {
            return Err(conflict(format!(
                "{last:?} is inside a {}, not an object",
                other.type_name()
            )));
        }
    }
    Ok(())
}

fn unset_path(doc: &mut Value, segments: &[String]) {
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut cur = doc;
    for seg in parents {
        let next = match cur {
            Value::Object(map) => map.get_mut(seg),
            Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Value::Object(map) = cur {
        map.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        Value::from_json_str(s).unwrap()
    }

    #[test]
    fn patch_sets_nested_and_unsets() {
        let doc = v(r#"{"_id":"a","address":{"city":"Paris"},"tags":["x","y"]}"#);
        let out = apply_patch(
            &doc,
            &[
                PatchChange::Set {
                    path: "address.zip".into(),
                    value: "75001".into(),
                },
                PatchChange::Set {
                    path: "geo.lat".into(),
                    value: Value::Float(48.8),
                },
                PatchChange::Set {
                    path: "tags.1".into(),
                    value: "z".into(),
                },
                PatchChange::Unset {
                    path: "address.city".into(),
                },
            ],
        )
        .unwrap();
        assert_eq!(
            out.to_json_string(),
            r#"{"_id":"a","address":{"zip":"75001"},"geo":{"lat":48.8},"tags":["x","z"]}"#
        );
    }

    #[test]
    fn patch_refuses_conflicts() {
        let doc = v(r#"{"_id":"a","n":1}"#);
        let set = |p: &str| PatchChange::Set {
            path: p.into(),
            value: Value::Null,
        };
        assert!(apply_patch(&doc, &[set("n.x")]).is_err());
        assert!(apply_patch(&doc, &[set("_id")]).is_err());
        assert!(apply_patch(&doc, &[set("a..b")]).is_err());
    }
}
