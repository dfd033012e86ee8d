//! Every size limit of the engine, in one place: what a document, a name, an
//! index, a command or a snapshot chunk may be, and how big the chunks of
//! background work are.

/// Limits a document must respect; writes that break one fail and change nothing.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest stored document, in bytes of the storage encoding.
    pub max_document_bytes: usize,
    /// Deepest nesting of arrays and objects (at most [`stratosdb_proof::MAX_NESTING_DEPTH`]).
    pub max_depth: usize,
    /// Longest `_id`, in bytes.
    pub max_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_document_bytes: 4 << 20,
            max_depth: 64,
            max_id_bytes: 1024,
        }
    }
}

/// Longest collection or index name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Most fields a compound index may have.
pub const MAX_INDEX_FIELDS: usize = 16;
/// Largest raft command the engine decodes (`EngineConfig::max_command_bytes`
/// may lower it, not raise it).
pub const MAX_COMMAND_BYTES: usize = 64 << 20;
/// Largest snapshot chunk the engine decodes.
pub const MAX_SNAPSHOT_CHUNK_BYTES: usize = 256 << 20;
/// Documents indexed per chunk of an index build.
pub const INDEX_BUILD_CHUNK: u32 = 1024;
/// Keys deleted per batch of garbage collection.
pub const GARBAGE_BATCH: usize = 4096;
/// Documents a drop removes from the Merkle trie per step.
pub const DROP_STEP: usize = 1024;
/// Stored keys of stale anchor mark change records (older than the previous
/// mark) deleted per write batch, in each layout (one key a record, packs).
pub const MARK_CHANGE_CLEANUP: usize = 16;
/// Records of changes since the latest anchor mark carried in the applied
/// index's value before a raft apply packs them into a key of their own.
pub const OPEN_MARK_RECORDS: usize = 16;
