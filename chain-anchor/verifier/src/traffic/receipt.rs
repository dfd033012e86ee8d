//! What one reply cost, signed by the node that served it. A node signs the
//! receipts it issues together in one batch once: the signature covers the
//! root of a Merkle tree over the batch's receipt hashes, and each receipt
//! carries its path to that root ([`BatchProof`]), so a receipt is checked
//! on its own, and an auditor checks each batch's signature once
//! ([`ReceiptChecker`]).

use std::collections::HashSet;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Address, wei};
use crate::{Hash, VerifyError};

pub const RECEIPT_MAGIC: [u8; 4] = *b"SDBR";
/// 2: signed in batches (version 1 signed each receipt's hash).
pub const RECEIPT_VERSION: u8 = 2;
/// The domain tag of a receipt hash (shard leaves 0x10, ledger blocks 0x20).
pub const TAG_RECEIPT: u8 = 0x30;
/// The domain tag of an inner node of a batch's tree.
pub const TAG_RECEIPT_NODE: u8 = 0x33;
/// The domain tag of what a node signs for a batch.
pub const TAG_RECEIPT_BATCH: u8 = 0x34;
/// A batch holds at most this many receipts (a path of at most 16 hashes).
pub const MAX_BATCH: u32 = 1 << 16;

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
    /// The batch it was signed in.
    pub batch: BatchProof,
    /// The node's signature over the batch ([`Receipt::batch_hash`]).
    #[serde(with = "signature_hex")]
    pub signature: [u8; 64],
}

/// Where a receipt sits in the batch its node signed: the receipts with
/// sequences `first..first + size`, the receipt being leaf `sequence -
/// first` of the batch's tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BatchProof {
    pub first: u64,
    pub size: u32,
    /// The sibling hashes from the leaf up; a layer's odd last node has no
    /// sibling and moves up as it is.
    #[serde(with = "crate::hex_serde::hash_list")]
    pub path: Vec<Hash>,
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

    /// Signs the receipt alone (a batch of one) with the serving node's key
    /// (setting `node_key`); returns its hash ([`Receipt::hash`]).
    pub fn sign(&mut self, key: &SigningKey) -> Hash {
        Receipt::sign_batch(std::slice::from_mut(self), key)[0]
    }

    /// Signs `receipts` as one batch with one signature, setting each one's
    /// `node_key`, `batch` and `signature`; returns their hashes. Their
    /// sequences must follow each other from the first (the log numbers
    /// them so), and there must be 1 to [`MAX_BATCH`] of them.
    pub fn sign_batch(receipts: &mut [Receipt], key: &SigningKey) -> Vec<Hash> {
        let node_key = key.verifying_key().to_bytes();
        let first = receipts.first().map_or(0, |r| r.sequence);
        debug_assert!(
            receipts
                .iter()
                .enumerate()
                .all(|(i, r)| r.sequence == first + i as u64)
                && !receipts.is_empty()
                && receipts.len() <= MAX_BATCH as usize
        );
        let size = receipts.len() as u32;
        for r in receipts.iter_mut() {
            r.node_key = node_key;
        }
        let leaves: Vec<Hash> = receipts.iter().map(Receipt::hash).collect();
        let layers = tree_layers(leaves);
        let root = layers.last().map_or([0; 32], |top| top[0]);
        let signature = key.sign(&batch_message(first, size, &root)).to_bytes();
        for (index, r) in receipts.iter_mut().enumerate() {
            r.batch = BatchProof {
                first,
                size,
                path: path_of(&layers, index),
            };
            r.signature = signature;
        }
        layers.into_iter().next().unwrap_or_default()
    }

    /// What the node signed for the receipt's batch: `SHA-256(0x34 ‖ first
    /// ‖ size ‖ root)`, the root folded from the receipt's hash and path.
    pub fn batch_hash(&self) -> Result<Hash, VerifyError> {
        let BatchProof { first, size, path } = &self.batch;
        let index = self
            .sequence
            .checked_sub(*first)
            .filter(|i| *i < u64::from(*size));
        let Some(index) = index.filter(|_| *size <= MAX_BATCH) else {
            return Err(self.bad(format!(
                "sequence {} is not in its batch of {size} from {first}",
                self.sequence
            )));
        };
        let root = fold(self.hash(), index, u64::from(*size), path)
            .ok_or_else(|| self.bad("its batch path does not fit its place in the batch".into()))?;
        Ok(batch_message(*first, *size, &root))
    }

    /// Checks the receipt holds together: its version, that the fee is what
    /// its prices give for its bytes and documents, and its node's signature
    /// over its batch. Whether the node is the cluster's, and the request
    /// the payer's, are the caller's checks (they need the cluster map and
    /// the request).
    pub fn verify(&self) -> Result<(), VerifyError> {
        self.check_fee()?;
        let signed = self.batch_hash()?;
        self.check_signature(&signed)
    }

    fn check_signature(&self, signed: &Hash) -> Result<(), VerifyError> {
        let key = VerifyingKey::from_bytes(&self.node_key)
            .map_err(|_| self.bad("node key is not an ed25519 key".into()))?;
        key.verify_strict(signed, &Signature::from_bytes(&self.signature))
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

/// Checks receipts as [`Receipt::verify`] does, each batch's signature
/// once: an auditor reads a node's receipts in runs of whole batches.
#[derive(Default)]
pub struct ReceiptChecker {
    /// (node key, batch hash, signature) of the batches whose signature held.
    verified: HashSet<([u8; 32], Hash, [u8; 64])>,
}

impl ReceiptChecker {
    pub fn verify(&mut self, receipt: &Receipt) -> Result<(), VerifyError> {
        receipt.check_fee()?;
        let signed = receipt.batch_hash()?;
        let batch = (receipt.node_key, signed, receipt.signature);
        if !self.verified.contains(&batch) {
            receipt.check_signature(&signed)?;
            self.verified.insert(batch);
        }
        Ok(())
    }
}

fn batch_message(first: u64, size: u32, root: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_RECEIPT_BATCH]);
    h.update(first.to_be_bytes());
    h.update(size.to_be_bytes());
    h.update(root);
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_RECEIPT_NODE]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The layers of a batch's tree, leaves first, the root alone last: each
/// layer pairs the one below (`node_hash(left, right)`); an odd last node
/// moves up as it is.
fn tree_layers(leaves: Vec<Hash>) -> Vec<Vec<Hash>> {
    let mut layers = vec![leaves];
    while let Some(below) = layers.last().filter(|l| l.len() > 1) {
        let above = below
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node_hash(left, right),
                [alone] => *alone,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
        layers.push(above);
    }
    layers
}

/// The siblings of leaf `index` from the leaves up.
fn path_of(layers: &[Vec<Hash>], mut index: usize) -> Vec<Hash> {
    let mut path = Vec::new();
    for layer in &layers[..layers.len().saturating_sub(1)] {
        if let Some(sibling) = layer.get(index ^ 1) {
            path.push(*sibling);
        }
        index /= 2;
    }
    path
}

/// The root of a tree of `size` leaves reached from leaf `index` (hash
/// `leaf`) along `path`; None unless the path has exactly the siblings
/// that place needs.
fn fold(leaf: Hash, mut index: u64, mut size: u64, path: &[Hash]) -> Option<Hash> {
    let mut node = leaf;
    let mut siblings = path.iter();
    while size > 1 {
        if index % 2 == 1 {
            node = node_hash(siblings.next()?, &node);
        } else if index + 1 < size {
            node = node_hash(&node, siblings.next()?);
        }
        index /= 2;
        size = size.div_ceil(2);
    }
    siblings.next().is_none().then_some(node)
}

pub(super) mod signature_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        crate::hex_serde::with_hex(sig, |text| s.serialize_str(text))
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
            batch: Default::default(),
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

    fn batch_of(size: usize, key: &SigningKey) -> Vec<Receipt> {
        let (template, _) = receipt();
        let mut batch: Vec<Receipt> = (0..size as u64)
            .map(|i| Receipt {
                sequence: 40 + i,
                bytes: 100 + i,
                fee: template.prices.fee(100 + i, 2).unwrap(),
                ..template.clone()
            })
            .collect();
        let hashes = Receipt::sign_batch(&mut batch, key);
        assert_eq!(hashes, batch.iter().map(Receipt::hash).collect::<Vec<_>>());
        batch
    }

    #[test]
    fn every_receipt_of_a_batch_verifies_with_one_signature() {
        let key = SigningKey::from_bytes(&[9; 32]);
        for size in 1..=17 {
            let batch = batch_of(size, &key);
            let signature = batch[0].signature;
            let depth = usize::BITS - (size - 1).leading_zeros();
            for r in &batch {
                r.verify()
                    .unwrap_or_else(|e| panic!("size {size}, {}: {e}", r.sequence));
                assert_eq!(r.signature, signature);
                assert_eq!((r.batch.first, r.batch.size), (40, size as u32));
                assert!(r.batch.path.len() <= depth as usize, "size {size}");
            }
        }
    }

    #[test]
    fn a_receipt_moved_out_of_its_place_or_with_a_damaged_path_is_refused() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let batch = batch_of(11, &key);
        for r in &batch {
            for (i, sibling) in r.batch.path.iter().enumerate() {
                for bit in [0, 77, 255] {
                    let mut damaged = r.clone();
                    damaged.batch.path[i] = *sibling;
                    damaged.batch.path[i][bit / 8] ^= 1 << (bit % 8);
                    assert!(damaged.verify().is_err());
                }
            }
            let mut short = r.clone();
            short.batch.path.pop();
            assert!(short.verify().is_err());
            let mut long = r.clone();
            long.batch.path.push([0; 32]);
            assert!(long.verify().is_err());
            for (first, size) in [
                (39, 11),
                (41, 11),
                (40, 10),
                (40, 12),
                (40, 0),
                (0, u32::MAX),
            ] {
                let mut moved = r.clone();
                moved.batch.first = first;
                moved.batch.size = size;
                assert!(moved.verify().is_err(), "{first} {size}");
            }
        }
        // Another batch's path and signature do not carry a receipt.
        let other = batch_of(11, &SigningKey::from_bytes(&[8; 32]));
        let mut mixed = batch[3].clone();
        mixed.batch = other[3].batch.clone();
        assert!(mixed.verify().is_err());
        let json = serde_json::to_string(&batch[3]).unwrap();
        assert_eq!(serde_json::from_str::<Receipt>(&json).unwrap(), batch[3]);
    }

    #[test]
    fn the_checker_answers_as_verify_and_checks_a_batch_signature_once() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let batch = batch_of(6, &key);
        let mut checker = ReceiptChecker::default();
        for r in &batch {
            checker.verify(r).unwrap();
        }
        assert_eq!(checker.verified.len(), 1);
        let mut forged = batch[2].clone();
        forged.fee += 1;
        assert!(checker.verify(&forged).is_err());
        let mut inflated = batch[2].clone();
        inflated.bytes += 1;
        inflated.fee = inflated
            .prices
            .fee(inflated.bytes, inflated.documents)
            .unwrap();
        assert!(checker.verify(&inflated).is_err());
        let mut resigned = batch[2].clone();
        resigned.signature[0] ^= 1;
        assert!(checker.verify(&resigned).is_err());
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
