//! Damage on disk: a stored document rewritten in sled's files behind the
//! engine's back (the process that owns them stopped), its recorded hash
//! left as it was, the way a tampered or rotting replica would hold it.

use std::path::Path;

use stratosdb_proof::{Value, decode_value, encode_value};

/// Rewrites the stored document `_id` of the sled database in `dir` with
/// `change` applied, leaving its recorded hash as it was. Returns its key
/// and the record before the change. `dir` is an embedded folder, or a
/// node's `DATA/db`: every tree (shard) is searched, the first match taken.
pub fn alter_document(dir: &Path, id: &str, change: impl Fn(&mut Value)) -> (Vec<u8>, Vec<u8>) {
    let db = sled::open(dir).unwrap();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        for item in tree.scan_prefix([0x01]) {
            let (key, record) = item.unwrap();
            if !key.ends_with(id.as_bytes()) {
                continue;
            }
            let mut doc = decode_value(&record[32..]).unwrap();
            change(&mut doc);
            let mut altered = record[..32].to_vec();
            encode_value(&doc, &mut altered);
            tree.insert(&key, altered).unwrap();
            db.flush().unwrap();
            return (key.to_vec(), record.to_vec());
        }
    }
    panic!("no document {id} in {}", dir.display());
}

/// Puts back a record [`alter_document`] returned.
pub fn restore_document(dir: &Path, key: &[u8], record: Vec<u8>) {
    let db = sled::open(dir).unwrap();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        if tree.contains_key(key).unwrap() {
            tree.insert(key, record.clone()).unwrap();
        }
    }
    db.flush().unwrap();
}

/// Sets field `field` of an object document to the integer `n`.
pub fn set_int(field: &str, n: i64) -> impl Fn(&mut Value) {
    let field = field.to_string();
    move |doc| {
        if let Value::Object(fields) = doc {
            fields.insert(field.clone(), Value::Int(n));
        }
    }
}
