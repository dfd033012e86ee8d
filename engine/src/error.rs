//! The engine's one error type. Each variant says what went wrong in terms a
//! caller can act on; `code()` is a stable name users can look up.

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    #[error("document is {size} bytes, over the limit of {limit} bytes")]
    DocumentTooLarge { size: usize, limit: usize },
    #[error("document nests {depth} levels deep, over the limit of {limit}")]
    DocumentTooDeep { depth: usize, limit: usize },
    #[error("_id must be a non-empty string of at most {max} bytes, got {got}")]
    InvalidId { got: String, max: usize },
    #[error("collection {0:?} does not exist")]
    CollectionNotFound(String),
    #[error("collection {0:?} already exists")]
    CollectionExists(String),
    #[error("invalid collection name {name:?}: {reason}")]
    InvalidCollectionName { name: String, reason: String },
    #[error("index {index:?} does not exist on collection {collection:?}")]
    IndexNotFound { collection: String, index: String },
    #[error("index {index:?} already exists on collection {collection:?}")]
    IndexExists { collection: String, index: String },
    #[error("invalid index: {0}")]
    InvalidIndex(String),
    #[error("duplicate _id {id:?} in collection {collection:?}")]
    DuplicateId { collection: String, id: String },
    #[error(
        "unique index {index:?} on {collection:?} already holds {key} (document {existing_id:?})"
    )]
    UniqueViolation {
        collection: String,
        index: String,
        key: String,
        existing_id: String,
    },
    #[error("document {id:?} not found in collection {collection:?}")]
    DocumentNotFound { collection: String, id: String },
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("cannot index parallel arrays: fields {0:?} of a compound index are both arrays")]
    ParallelArrays(Vec<String>),
    #[error("command is malformed: {0}")]
    MalformedCommand(String),
    #[error("command of {size} bytes is over the limit of {limit} bytes")]
    CommandTooLarge { size: usize, limit: usize },
    #[error("snapshot rejected: {0}")]
    SnapshotRejected(String),
    #[error(
        "write conflict: document {id:?} in collection {collection:?} changed since it was read; retry"
    )]
    WriteConflict { collection: String, id: String },
    #[error(
        "shard {shard} was written with storage layout {found}; this stratosdb reads layout {expected}: open it with the stratosdb that made it, or start a new data folder"
    )]
    UnsupportedLayout { shard: u32, found: u8, expected: u8 },
    #[error("anchor mark rejected: {0}")]
    InvalidAnchorMark(String),
    #[error("stored data is corrupt: {0}")]
    Corruption(String),
    #[error("storage error: {0}")]
    Storage(String),
    /// The data folder is held by another process, or is not a data folder.
    #[error(transparent)]
    DataDir(#[from] crate::data_dir::DataDirError),
}

impl EngineError {
    /// A stable, greppable code for the error kind.
    pub fn code(&self) -> &'static str {
        use EngineError::*;
        match self {
            InvalidDocument(_) => "invalid_document",
            DocumentTooLarge { .. } => "document_too_large",
            DocumentTooDeep { .. } => "document_too_deep",
            InvalidId { .. } => "invalid_id",
            CollectionNotFound(_) => "collection_not_found",
            CollectionExists(_) => "collection_exists",
            InvalidCollectionName { .. } => "invalid_collection_name",
            IndexNotFound { .. } => "index_not_found",
            IndexExists { .. } => "index_exists",
            InvalidIndex(_) => "invalid_index",
            DuplicateId { .. } => "duplicate_id",
            UniqueViolation { .. } => "unique_violation",
            DocumentNotFound { .. } => "document_not_found",
            InvalidPath { .. } => "invalid_path",
            ParallelArrays(_) => "parallel_arrays",
            MalformedCommand(_) => "malformed_command",
            CommandTooLarge { .. } => "command_too_large",
            SnapshotRejected(_) => "snapshot_rejected",
            WriteConflict { .. } => "write_conflict",
            UnsupportedLayout { .. } => "unsupported_layout",
            InvalidAnchorMark(_) => "invalid_anchor_mark",
            Corruption(_) => "corruption",
            Storage(_) => "storage",
            DataDir(e) => e.code(),
        }
    }
}

impl EngineError {
    /// A fault of the storage or of stored data, as opposed to a request that
    /// fails on its merits: a batch stops on a fault, and rejects a failing
    /// command alone otherwise.
    pub fn is_fault(&self) -> bool {
        matches!(self, EngineError::Storage(_) | EngineError::Corruption(_))
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
