use thiserror::Error;

/// What went wrong talking to a chain. `Unavailable` is worth retrying; the
/// others are not without a change.
#[derive(Debug, Error)]
pub enum ChainError {
    /// The chain could not be reached or did not answer in time.
    #[error("chain unavailable: {0}")]
    Unavailable(String),
    /// The chain refused a submission (with its reason).
    #[error("chain refused the submission: {0}")]
    Refused(String),
    /// An anchor for this epoch is on the chain with another payload.
    #[error("epoch {epoch} is already anchored with another payload ({reference})")]
    ConflictingAnchor { epoch: u64, reference: String },
    /// Nothing is recorded under this reference.
    #[error("no anchor at {0}")]
    NotFound(String),
    /// What the chain holds does not check out: a broken hash chain, a bad
    /// signature, a failed transaction, another chain id.
    #[error("chain integrity: {0}")]
    Integrity(String),
    /// The node behind the RPC URL is on another chain than the configured one.
    #[error("{rpc_url} is chain id {actual}, the configuration says {configured}")]
    WrongChainId {
        rpc_url: String,
        configured: u64,
        actual: u64,
    },
    /// A key file that cannot be used (never names the key itself).
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    /// A configuration that cannot work (with what is wrong).
    #[error("chain configuration: {0}")]
    Config(String),
    /// A blocking backend called from inside an async runtime.
    #[error("{0}")]
    Misuse(&'static str),
    #[error("malformed chain reference {0:?}")]
    MalformedReference(String),
    #[error(transparent)]
    Verify(#[from] stratosdb_verifier::VerifyError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}
