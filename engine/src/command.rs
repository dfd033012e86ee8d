//! Write operations and the serialized command that replication carries.

use bincode::{Decode, Encode};
use stratosdb_proof::{Hash, Value};

use crate::{EngineError, IndexSpec, Result};

/// One write. A batch of them ([`Command`]) applies all or nothing.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Op {
    CreateCollection {
        name: String,
    },
    DropCollection {
        name: String,
    },
    DropIndex {
        collection: String,
        name: String,
    },
    /// Declares an index; it is built by [`Op::BuildIndex`] chunks and used by
    /// queries once complete.
    CreateIndex {
        collection: String,
        spec: IndexSpec,
    },
    /// Fails if a document with the same `_id` exists.
    Insert {
        collection: String,
        doc: Value,
    },
    /// Fails unless a document with the same `_id` exists.
    Replace {
        collection: String,
        doc: Value,
    },
    /// Inserts or replaces.
    Upsert {
        collection: String,
        doc: Value,
    },
    /// Sets and unsets paths of an existing document, in order.
    Patch {
        collection: String,
        id: String,
        changes: Vec<PatchChange>,
    },
    /// Removes a document; removing an absent one changes nothing.
    Delete {
        collection: String,
        id: String,
    },
    /// Builds the next chunk of an index being built (after
    /// [`Op::CreateIndex`]): the entries of at most `max_docs` more documents,
    /// in `_id` order; the chunk that reaches the end makes the index complete.
    /// On an index that is already complete it does nothing.
    BuildIndex {
        collection: String,
        index: String,
        max_docs: u32,
    },
    /// A precondition: the document is exactly the version whose hash
    /// (`stratosdb_proof::hash::doc_hash`) is given, or with `None` absent;
    /// otherwise the command fails with a write conflict and changes nothing.
    /// An UPDATE computed from a document it read carries one, so the write
    /// applies only if nothing changed the document in between (optimistic
    /// concurrency, decided deterministically at apply time on every replica).
    Expect {
        collection: String,
        id: String,
        doc_hash: Option<Hash>,
    },
    /// Records the shard's anchor mark of `epoch`: the raft index of this
    /// entry and the root after every entry before it (`crate::AnchorMark`).
    /// It must be the only operation of its command. A second mark of an
    /// epoch already marked keeps the first (its outcome reports the first);
    /// a mark of an epoch older than the latest one is rejected.
    AnchorMark {
        epoch: u64,
    },
}

/// One change of a [`Op::Patch`]: paths are dotted (`address.city`); a numeric
/// segment indexes an existing array element.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum PatchChange {
    /// Sets the path, creating missing intermediate objects.
    Set { path: String, value: Value },
    /// Removes the path if present.
    Unset { path: String },
}

/// What replication proposes and every replica applies: a batch of operations.
/// Every document in it already has its `_id` (ids are chosen before proposing,
/// so that applying is deterministic).
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct Command {
    pub ops: Vec<Op>,
}

/// Wire-format version, the first byte of every encoded command.
const COMMAND_VERSION: u8 = 1;

impl Command {
    /// The bytes a raft entry carries.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![COMMAND_VERSION];
        // Encoding owned data into a Vec cannot fail.
        out.extend(bincode::encode_to_vec(self, bincode::config::standard()).unwrap_or_default());
        out
    }

    /// Decodes a command, refusing anything over `limit` bytes before reading it.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Command> {
        if bytes.len() > limit {
            return Err(EngineError::CommandTooLarge {
                size: bytes.len(),
                limit,
            });
        }
        match bytes.split_first() {
            Some((&COMMAND_VERSION, body)) => {
                let config = bincode::config::standard()
                    .with_limit::<{ crate::limits::MAX_COMMAND_BYTES }>();
                let (cmd, used) = bincode::decode_from_slice(body, config)
                    .map_err(|e| EngineError::MalformedCommand(e.to_string()))?;
                if used != body.len() {
                    return Err(EngineError::MalformedCommand(format!(
                        "{} trailing bytes",
                        body.len() - used
                    )));
                }
                Ok(cmd)
            }
            Some((v, _)) => Err(EngineError::MalformedCommand(format!(
                "unknown command version {v}"
            ))),
            None => Err(EngineError::MalformedCommand("empty command".into())),
        }
    }
}
