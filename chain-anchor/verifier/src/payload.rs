//! The anchor payload: the fixed 113 bytes that one anchor puts on the chain
//! (an EVM transaction's calldata, or a local ledger block's entry).
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `SDBA` (`53 44 42 41`) |
//! | 4 | 1 | version, 1 |
//! | 5 | 32 | cluster id |
//! | 37 | 8 | epoch, u64 big-endian |
//! | 45 | 32 | cluster root ([`crate::cluster_root`] of the epoch's shard leaves) |
//! | 77 | 4 | number of shard leaves, u32 big-endian |
//! | 81 | 32 | the previous epoch's anchor reference (32 zero bytes for the first) |

use serde::{Deserialize, Serialize};

use crate::{Hash, VerifyError};

pub const PAYLOAD_MAGIC: [u8; 4] = *b"SDBA";
pub const PAYLOAD_VERSION: u8 = 1;
/// The encoded length of a version-1 payload.
pub const PAYLOAD_LEN: usize = 113;

/// One epoch's anchor, as it is on the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorPayload {
    /// Names the cluster, so anchors of several clusters can share a chain.
    #[serde(with = "crate::hex_serde::hash")]
    pub cluster_id: Hash,
    pub epoch: u64,
    #[serde(with = "crate::hex_serde::hash")]
    pub cluster_root: Hash,
    pub leaf_count: u32,
    /// The chain reference (transaction or ledger block hash) of the previous
    /// epoch's anchor: the anchors of a cluster form a chain of their own.
    #[serde(with = "crate::hex_serde::hash")]
    pub previous: Hash,
}

impl AnchorPayload {
    /// The bytes on the chain.
    ///
    /// ```
    /// use stratosdb_verifier::AnchorPayload;
    /// let p = AnchorPayload { cluster_id: [7; 32], epoch: 3, cluster_root: [9; 32], leaf_count: 8, previous: [0; 32] };
    /// let bytes = p.encode();
    /// assert_eq!(&bytes[..4], b"SDBA");
    /// assert_eq!(AnchorPayload::decode(&bytes).unwrap(), p);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAYLOAD_LEN);
        out.extend_from_slice(&PAYLOAD_MAGIC);
        out.push(PAYLOAD_VERSION);
        out.extend_from_slice(&self.cluster_id);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.cluster_root);
        out.extend_from_slice(&self.leaf_count.to_be_bytes());
        out.extend_from_slice(&self.previous);
        out
    }

    /// Reads a payload, refusing anything that is not exactly one version-1
    /// payload, with the reason.
    pub fn decode(bytes: &[u8]) -> Result<AnchorPayload, VerifyError> {
        let bad = |why: String| VerifyError::MalformedPayload(why);
        if bytes.len() < 5 || bytes[..4] != PAYLOAD_MAGIC {
            return Err(bad("does not begin with the magic SDBA".into()));
        }
        if bytes[4] != PAYLOAD_VERSION {
            return Err(bad(format!("unknown version {}", bytes[4])));
        }
        if bytes.len() != PAYLOAD_LEN {
            return Err(bad(format!(
                "{} bytes, a version-1 payload has {PAYLOAD_LEN}",
                bytes.len()
            )));
        }
        let hash_at = |at: usize| -> Hash {
            let mut h = [0u8; 32];
            h.copy_from_slice(&bytes[at..at + 32]);
            h
        };
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&bytes[37..45]);
        let mut count = [0u8; 4];
        count.copy_from_slice(&bytes[77..81]);
        Ok(AnchorPayload {
            cluster_id: hash_at(5),
            epoch: u64::from_be_bytes(epoch),
            cluster_root: hash_at(45),
            leaf_count: u32::from_be_bytes(count),
            previous: hash_at(81),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AnchorPayload {
        AnchorPayload {
            cluster_id: [0x11; 32],
            epoch: 0x0102_0304_0506_0708,
            cluster_root: [0x22; 32],
            leaf_count: 9,
            previous: [0x33; 32],
        }
    }

    #[test]
    fn layout_is_byte_for_byte_the_documented_one() {
        let b = sample().encode();
        assert_eq!(b.len(), PAYLOAD_LEN);
        assert_eq!(&b[0..5], b"SDBA\x01");
        assert_eq!(&b[5..37], &[0x11; 32]);
        assert_eq!(&b[37..45], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[45..77], &[0x22; 32]);
        assert_eq!(&b[77..81], &[0, 0, 0, 9]);
        assert_eq!(&b[81..113], &[0x33; 32]);
    }

    #[test]
    fn every_truncation_extension_and_header_flip_is_refused() {
        let b = sample().encode();
        for len in 0..b.len() {
            assert!(AnchorPayload::decode(&b[..len]).is_err(), "length {len}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(AnchorPayload::decode(&longer).is_err());
        for byte in 0..5 {
            for bit in 0..8 {
                let mut flipped = b.clone();
                flipped[byte] ^= 1 << bit;
                assert!(AnchorPayload::decode(&flipped).is_err());
            }
        }
    }

    #[test]
    fn every_body_bit_flip_changes_the_decoded_payload() {
        let b = sample().encode();
        for byte in 5..b.len() {
            for bit in 0..8 {
                let mut flipped = b.clone();
                flipped[byte] ^= 1 << bit;
                assert_ne!(AnchorPayload::decode(&flipped).unwrap(), sample());
            }
        }
    }

    #[test]
    fn json_form_uses_hex() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["cluster_root"], hex::encode([0x22; 32]));
        let back: AnchorPayload = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }
}
