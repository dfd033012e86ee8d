//! Documents re-hashed from their stored bytes, against the hash each one's
//! record holds (what the shard's trie is built from): what `--data` and
//! `--connect --shard` share. A document altered on disk keeps its recorded
//! hash, so the trie (and the root the replica states) does not show it;
//! re-hashing does, and names it.

use std::collections::BTreeMap;

use stratosdb_chain_anchor::Hash;
use stratosdb_engine::Value;
use stratosdb_engine::proof::hash::{doc_hash, key_hash, to_hex};
use stratosdb_engine::root_from_scratch;

use super::Audit;

#[derive(Default)]
pub struct Rehash {
    /// Key hash → the document hash of its stored bytes.
    pub hashes: BTreeMap<Hash, Hash>,
    /// Each altered document: what (`collection/_id`) and why.
    pub damaged: Vec<(String, String)>,
}

impl Rehash {
    /// One stored document and the hash its record holds (`None`: none).
    pub fn add(&mut self, collection: &str, id: &str, doc: &Value, recorded: Option<Hash>) {
        let hash = doc_hash(doc);
        if recorded != Some(hash) {
            self.damaged.push((
                format!("{collection}/{id}"),
                format!(
                    "its stored bytes hash to {}, the shard's trie holds {}: it was altered on disk",
                    to_hex(&hash),
                    recorded
                        .map(|h| to_hex(&h))
                        .unwrap_or_else(|| "nothing".into())
                ),
            ));
        }
        self.hashes.insert(key_hash(collection, id), hash);
    }

    /// A verdict per altered document (`where_` says where it is stored), or
    /// one `ok` for all of them (`what`: the documents, for people).
    pub fn report(&self, audit: &mut Audit, what: &str, where_: &str) {
        if self.damaged.is_empty() {
            audit.ok(&format!(
                "{what}: each one's stored bytes hash to its record's hash"
            ));
        }
        for (document, why) in &self.damaged {
            audit.failed(&format!("document {document}{where_}"), why);
        }
    }

    /// The root over `hashes`.
    pub fn root(hashes: &BTreeMap<Hash, Hash>) -> Hash {
        let mut leaves: Vec<(Hash, Hash)> = hashes.iter().map(|(k, v)| (*k, *v)).collect();
        root_from_scratch(&mut leaves)
    }

    /// Why a recomputed root differs from `against`: the altered documents
    /// named above, else `otherwise`.
    pub fn why_different(&self, against: &str, otherwise: &str) -> String {
        match self.damaged.first() {
            Some((first, _)) => format!(
                "differs from {against}: {} altered document(s), named above (the first: {first})",
                self.damaged.len()
            ),
            None => format!("differs from {against}: {otherwise}"),
        }
    }
}
