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
