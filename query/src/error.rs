//! The query layer's one error type. Engine errors pass through unchanged
//! (`#[from]`); everything else names what was wrong and where.

use stratosdb_engine::EngineError;

/// Everything a statement or a filter can fail with.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The text is not a statement of the dialect. The message says where
    /// (line and column) and what was expected.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// Parsed, but uses something the dialect does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A function name that is not an aggregate or a known scalar function.
    #[error("unknown function {0:?}")]
    UnknownFunction(String),
    /// The statement is well formed but cannot mean anything (a bare path
    /// outside GROUP BY in an aggregate query, a bad LIMIT, ...).
    #[error("invalid query: {0}")]
    Invalid(String),
    /// A value given in a statement is not what it must be (bad JSON, ...).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// A JSON filter that does not follow the filter language.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// Arithmetic on values that have none (a string plus a number).
    #[error("type error: {0}")]
    Type(String),
    /// Integer overflow, or a result that is not a finite number.
    #[error("arithmetic error: {0}")]
    Arithmetic(String),
    /// `DROP INDEX name` when several collections have an index of that name.
    #[error(
        "index {name:?} exists on several collections ({collections}); write DROP INDEX collection.{name}"
    )]
    AmbiguousIndex { name: String, collections: String },
    /// `DROP INDEX name` when no collection has it.
    #[error("index {0:?} does not exist on any collection")]
    IndexNotFound(String),
    /// A read-modify-write statement met a concurrent change of its documents
    /// on every attempt; nothing was written, and running it again is safe.
    #[error("too much contention: gave up after {attempts} attempts ({last})")]
    Contention { attempts: u32, last: String },
    /// What the engine refused (unknown collection, unique violation, ...).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The statement is beyond a fixed limit of the dialect (an expression
    /// nested too deeply); the message names the limit and its value.
    #[error("limit exceeded: {what} is more than {limit}")]
    LimitExceeded { what: String, limit: usize },
    /// An error a store got from elsewhere (another node), kept with its
    /// code so callers (and the retry of a write conflict) see the same kind.
    #[error("{message}")]
    Remote { code: String, message: String },
    /// The shard has no quorum or cannot be reached; retrying may succeed.
    /// A read that asked for proofs but cannot have them (an aggregate...).
    #[error("proofs unsupported: {0}")]
    ProofUnsupported(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A message between nodes that does not decode (see [`crate::wire`]).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A UNIQUE index cannot be enforced across shards (documents are placed
    /// by `_id`): it needs a collection with one shard.
    #[error(
        "collection {collection:?} has {shards} shards: a UNIQUE index can only be enforced on a collection with one shard; create the collection WITH (shards = 1)"
    )]
    UniqueNeedsSingleShard { collection: String, shards: u32 },
    /// A write over several shards failed on one after others had applied
    /// theirs: statements are atomic per shard, not across shards.
    #[error("{written} of {total} documents were written before shard {shard} failed: {source}")]
    PartialWrite {
        written: u64,
        total: u64,
        shard: u32,
        source: Box<QueryError>,
    },
}

impl QueryError {
    /// A stable, greppable code for the error kind (engine errors keep theirs).
    pub fn code(&self) -> &str {
        match self {
            QueryError::Syntax(_) => "syntax_error",
            QueryError::Unsupported(_) => "unsupported",
            QueryError::UnknownFunction(_) => "unknown_function",
            QueryError::Invalid(_) => "invalid_query",
            QueryError::InvalidValue(_) => "invalid_value",
            QueryError::InvalidFilter(_) => "invalid_filter",
            QueryError::Type(_) => "type_error",
            QueryError::Arithmetic(_) => "arithmetic_error",
            QueryError::AmbiguousIndex { .. } => "ambiguous_index",
            QueryError::IndexNotFound(_) => "index_not_found",
            QueryError::Contention { .. } => "contention",
            QueryError::Engine(e) => e.code(),
            QueryError::LimitExceeded { .. } => "limit_exceeded",
            QueryError::Remote { code, .. } => code,
            QueryError::Unavailable(_) => "unavailable",
            QueryError::ProofUnsupported(_) => "proof_unsupported",
            QueryError::Malformed(_) => "malformed",
            QueryError::UniqueNeedsSingleShard { .. } => "unique_needs_single_shard",
            QueryError::PartialWrite { .. } => "partial_write",
        }
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
