//! What one reply cost, signed by the node that served it.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Address, wei};
use crate::{Hash, VerifyError};

pub const RECEIPT_MAGIC: [u8; 4] = *b"SDBR";
pub const RECEIPT_VERSION: u8 = 1;
/// The domain tag of a receipt hash (shard leaves 0x10, ledger blocks 0x20).
pub const TAG_RECEIPT: u8 = 0x30;

/// The cluster's prices, in wei. A reply costs
/// `ceil(bytes × wei_per_kib / 1024) + documents × wei_per_document`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Prices {
    #[serde(with = "wei::string")]
    pub wei_per_kib: u128,
    #[serde(with = "wei::string")]
    pub wei_per_document: u128,
}

impl Prices {
    /// The fee for serving `bytes` and reading `documents`; `None` if it does
    /// not fit a u128 (no real price comes near).
    pub fn fee(&self, bytes: u64, documents: u64) -> Option<u128> {
        let bytes_part = (bytes as u128)
            .checked_mul(self.wei_per_kib)?
            .div_ceil(1024);
        let docs_part = (documents as u128).checked_mul(self.wei_per_document)?;
        bytes_part.checked_add(docs_part)
    }
}

/// A serving node's signed statement: it served `bytes` (the reply body) and
/// read `documents` for `payer`'s request `request_hash`, at `prices`, for
/// `fee` wei. Sequence numbers count one node's receipts from 1 without gaps,
/// so a settlement can say which receipts it covers as a range per node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub version: u8,
    #[serde(with = "crate::hex_serde::hash")]
    pub cluster_id: Hash,
    /// The serving node's ed25519 public key (as in the cluster map).
    #[serde(with = "crate::hex_serde::hash")]
    pub node_key: [u8; 32],
    pub sequence: u64,
    /// The epoch in which it was served.
    pub epoch: u64,
    pub payer: Address,
    /// The hash the payer signed ([`super::RequestAuth::request_hash`]).
    #[serde(with = "crate::hex_serde::hash")]
    pub request_hash: Hash,
    pub bytes: u64,
    pub documents: u64,
    pub prices: Prices,
    #[serde(with = "wei::string")]
    pub fee: u128,
    #[serde(with = "signature_hex")]
    pub signature: [u8; 64],
}

impl Receipt {
    /// The signed bytes (`docs/traffic.md`): magic, version, then each field
    /// in order, integers big-endian, amounts as 16 bytes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 1 + 32 + 32 + 8 + 8 + 20 + 32 + 8 + 8 + 16 * 3);
        out.extend_from_slice(&RECEIPT_MAGIC);
        out.push(self.version);
        out.extend_from_slice(&self.cluster_id);
        out.extend_from_slice(&self.node_key);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.payer.0);
        out.extend_from_slice(&self.request_hash);
        out.extend_from_slice(&self.bytes.to_be_bytes());
        out.extend_from_slice(&self.documents.to_be_bytes());
        out.extend_from_slice(&self.prices.wei_per_kib.to_be_bytes());
        out.extend_from_slice(&self.prices.wei_per_document.to_be_bytes());
        out.extend_from_slice(&self.fee.to_be_bytes());
        out
    }

    /// `SHA-256(0x30 ‖ signed bytes)`: what the node signs, and what a
    /// settlement's receipts hash folds.
    pub fn hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update([TAG_RECEIPT]);
        h.update(self.signed_bytes());
        h.finalize().into()
    }

    /// Signs the receipt with the serving node's key (setting `node_key`);
    /// returns the hash it signed ([`Receipt::hash`]).
    pub fn sign(&mut self, key: &SigningKey) -> Hash {
        self.node_key = key.verifying_key().to_bytes();
        let hash = self.hash();
        self.signature = key.sign(&hash).to_bytes();
        hash
    }

    /// Checks the receipt holds together: its version, that the fee is what
    /// its prices give for its bytes and documents, and its node's signature.
    /// Whether the node is the cluster's, and the request the payer's, are
    /// the caller's checks (they need the cluster map and the request).
    pub fn verify(&self) -> Result<(), VerifyError> {
        self.check_fee()?;
        let key = VerifyingKey::from_bytes(&self.node_key)
            .map_err(|_| self.bad("node key is not an ed25519 key".into()))?;
        key.verify_strict(&self.hash(), &Signature::from_bytes(&self.signature))
            .map_err(|_| self.bad("bad node signature".into()))
    }

    fn bad(&self, why: String) -> VerifyError {
        VerifyError::BadReceipt {
            node_sequence: format!("{}#{}", hex::encode(&self.node_key[..4]), self.sequence),
            reason: why,
        }
    }

    /// Checks the version and that the fee is what the prices give for the
    /// bytes and documents (everything [`Receipt::verify`] checks but the
    /// signature).
    pub fn check_fee(&self) -> Result<(), VerifyError> {
        let bad = |why: String| self.bad(why);
        if self.version != RECEIPT_VERSION {
            return Err(bad(format!("unknown receipt version {}", self.version)));
        }
        match self.prices.fee(self.bytes, self.documents) {
            Some(fee) if fee == self.fee => {}
            expected => {
                return Err(bad(format!(
                    "fee {} wei is not what its prices give for {} bytes and {} documents ({})",
                    self.fee,
                    self.bytes,
                    self.documents,
                    expected.map_or("overflow".to_string(), |f| format!("{f} wei"))
                )));
            }
        }
        Ok(())
    }
}

pub(super) mod signature_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(sig))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                serde::de::Error::custom("expected a 64-byte signature as 128 hex digits")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt() -> (Receipt, SigningKey) {
        let key = SigningKey::from_bytes(&[4; 32]);
        let prices = Prices {
            wei_per_kib: 1_000_000_000,
            wei_per_document: 10_000_000,
        };
        let mut r = Receipt {
            version: RECEIPT_VERSION,
            cluster_id: [1; 32],
            node_key: [0; 32],
            sequence: 7,
            epoch: 3,
            payer: Address([2; 20]),
            request_hash: [5; 32],
            bytes: 1500,
            documents: 2,
            prices,
            fee: prices.fee(1500, 2).unwrap(),
            signature: [0; 64],
        };
        r.sign(&key);
        (r, key)
    }

    #[test]
    fn fees_round_up_to_the_wei() {
        let p = Prices {
            wei_per_kib: 1024,
            wei_per_document: 5,
        };
        assert_eq!(p.fee(1, 0), Some(1));
        assert_eq!(p.fee(1024, 2), Some(1034));
        let p = Prices {
            wei_per_kib: 3,
            wei_per_document: 0,
        };
        assert_eq!(p.fee(1, 0), Some(1)); // 3/1024 rounds up
        assert_eq!(p.fee(0, 0), Some(0));
        let p = Prices {
            wei_per_kib: u128::MAX,
            wei_per_document: 0,
        };
        assert_eq!(p.fee(2, 0), None);
    }

    #[test]
    fn a_signed_receipt_verifies_and_survives_json() {
        let (r, _) = receipt();
        r.verify().unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"fee\":\""), "{json}");
        let back: Receipt = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let (r, _) = receipt();
        let json = serde_json::to_value(&r).unwrap();
        let _ = json;
        let bytes = r.signed_bytes();
        // Flip each bit of the signed part: the decoded field changes, so the
        // signature (or the fee check) fails.
        for bit in 0..bytes.len() * 8 {
            let mut flipped = r.clone();
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            flipped.apply_signed_bytes(&b);
            assert!(flipped.verify().is_err(), "bit {bit}");
        }
        for bit in 0..64 * 8 {
            let mut flipped = r.clone();
            flipped.signature[bit / 8] ^= 1 << (bit % 8);
            assert!(flipped.verify().is_err(), "signature bit {bit}");
        }
    }

    impl Receipt {
        /// Test helper: overwrite the fields from signed bytes.
        fn apply_signed_bytes(&mut self, b: &[u8]) {
            let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
            let u128_at = |at: usize| u128::from_be_bytes(b[at..at + 16].try_into().unwrap());
            if b[..4] != RECEIPT_MAGIC {
                self.version = 0xff; // a broken magic is a different format
            } else {
                self.version = b[4];
            }
            self.cluster_id.copy_from_slice(&b[5..37]);
            self.node_key.copy_from_slice(&b[37..69]);
            self.sequence = u64_at(69);
            self.epoch = u64_at(77);
            self.payer.0.copy_from_slice(&b[85..105]);
            self.request_hash.copy_from_slice(&b[105..137]);
            self.bytes = u64_at(137);
            self.documents = u64_at(145);
            self.prices.wei_per_kib = u128_at(153);
            self.prices.wei_per_document = u128_at(169);
            self.fee = u128_at(185);
        }
    }
}
