use thiserror::Error;

/// Why something did not verify, or could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// Bytes that are not an anchor payload: named part, what was wrong.
    #[error("malformed anchor payload: {0}")]
    MalformedPayload(String),
    #[error("malformed leaf proof: {0}")]
    MalformedLeafProof(String),
    /// The leaf and proof lead to another cluster root than the anchored one.
    #[error("shard leaf {leaf} is not under cluster root {root}")]
    LeafNotUnderRoot { leaf: String, root: String },
    /// A read proof that does not hold together or does not match its reply.
    #[error("read proof rejected: {0}")]
    ReadProof(String),
    /// A read proof with no anchor where an anchored one is required.
    #[error("{0} is unanchored (proved to the replica's current root only)")]
    Unanchored(String),
    /// A ledger block that does not check out, or whose record is damaged:
    /// its height (the height it would have, for a damaged record) and why.
    #[error("ledger block {height}: {reason}")]
    LedgerBlock { height: u64, reason: String },
    /// Bytes that are not a ledger file.
    #[error("not a ledger: {0}")]
    MalformedLedger(String),
    /// Text that is not an account address: what and why.
    #[error("malformed address {0}")]
    MalformedAddress(String),
    /// Text that is not an amount of STOS or wei.
    #[error("malformed amount {0}")]
    MalformedAmount(String),
    /// A request signature that is missing a part, malformed, or not the
    /// claimed payer's.
    #[error("bad request signature: {0}")]
    BadRequestSignature(String),
    /// A settlement (volume report, its signatures, its entry) that does
    /// not check out.
    #[error("settlement: {0}")]
    BadSettlement(String),
    /// A payout entry that does not decode.
    #[error("payout: {0}")]
    BadPayout(String),
    /// A deposit entry that does not check out.
    #[error("deposit: {0}")]
    BadDeposit(String),
    /// A receipt that does not check out: which (node key prefix#sequence), why.
    #[error("receipt {node_sequence}: {reason}")]
    BadReceipt {
        node_sequence: String,
        reason: String,
    },
    #[error(transparent)]
    Proof(#[from] stratosdb_proof::ProofError),
}
