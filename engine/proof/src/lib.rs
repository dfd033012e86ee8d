//! # stratosdb-proof
//!
//! What an auditor or a light client needs to check stratosdb's answers, with no
//! storage engine attached: the document model ([`Value`]), its canonical form
//! (RFC 8785, [`canonical_json`]), the hashes of the shard commitment
//! ([`hash`]), and inclusion / non-inclusion proofs ([`InclusionProof`],
//! [`NonInclusionProof`]). The byte-level format is in `docs/merkle.md`.

mod canonical;
mod codec;
pub mod hash;
pub mod hex_serde;
mod json;
mod proof;
mod value;

pub use canonical::canonical_json;
pub use codec::{decode_value, encode_value};
pub use hash::{EMPTY_ROOT, Hash};
pub use proof::{InclusionProof, MAX_PROOF_DEPTH, NonInclusionProof, Proof, ProofLevel, Terminal};
pub use value::{MAX_NESTING_DEPTH, Object, PathSegment, Value, cmp_int_float};

/// Why a value could not be made into a stratosdb value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A key repeated in one object. `path` locates the object in the dialect's
    /// notation (`a.items[2]`); it is empty for the top-level object.
    #[error(
        "invalid JSON: duplicate key {key:?} in {} at line {line}, column {column}",
        describe_object(.path)
    )]
    DuplicateKey {
        key: String,
        path: String,
        line: usize,
        column: usize,
    },
    #[error("integer {0} is outside the 64-bit signed range")]
    IntegerOutOfRange(String),
    #[error("number {0} is not finite; JSON has no NaN or infinity")]
    NonFiniteNumber(String),
    #[error("corrupt value encoding: {0}")]
    Corrupt(String),
    #[error("value nested deeper than {0} levels")]
    TooDeep(usize),
}

fn describe_object(path: &str) -> String {
    if path.is_empty() {
        "the top-level object".to_string()
    } else {
        format!("the object at {path}")
    }
}

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("proof is malformed: {0}")]
    Malformed(String),
    #[error("proof leads to root {computed}, not the expected {expected}")]
    RootMismatch { expected: String, computed: String },
}
