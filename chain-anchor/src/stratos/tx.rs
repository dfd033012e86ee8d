//! Anchor transactions: building and signing one, and reading one back from
//! its signed bytes alone.
//!
//! An anchor is an EIP-1559 (type 2) transaction from the key's address to
//! itself, value 0, no access list, whose calldata is exactly the 113-byte
//! [`AnchorPayload`] (`docs/chain.md`, "The Stratos backend").

use alloy::consensus::transaction::RlpEcdsaEncodableTx;
use alloy::consensus::{SignableTransaction, Signed, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};
use stratosdb_verifier::AnchorPayload;

use crate::ChainError;

/// What an anchor transaction says, checked against its signature: the
/// payload, who signed it, for which chain, at which nonce and fees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorTx {
    /// keccak-256 of the signed bytes: the transaction hash.
    pub tx_hash: [u8; 32],
    pub chain_id: u64,
    /// The signer, recovered from the signature (also the recipient).
    pub from: Address,
    pub nonce: u64,
    pub gas_limit: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
    pub payload: AnchorPayload,
}

/// EIP-1559 fees, in wei per gas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

impl Fees {
    /// Fees a node accepts as a replacement of a transaction that paid
    /// `self`: geth and anvil want both at least 10% higher; this adds 10%
    /// and one wei, and takes `current` where the market has moved further.
    pub fn bumped(self, current: Fees) -> Fees {
        let bump = |old: u128| old.saturating_add(old / 10).saturating_add(1);
        let priority = bump(self.max_priority_fee_per_gas).max(current.max_priority_fee_per_gas);
        let max_fee = bump(self.max_fee_per_gas)
            .max(current.max_fee_per_gas)
            .max(priority);
        Fees {
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
        }
    }
}

/// Signs the anchor transaction of `payload`; returns its bytes (EIP-2718)
/// and what they say.
pub(crate) fn sign_anchor(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    gas_limit: u64,
    fees: Fees,
    payload: &AnchorPayload,
) -> Result<(Vec<u8>, AnchorTx), ChainError> {
    let from = signer.address();
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit,
        max_fee_per_gas: fees.max_fee_per_gas,
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
        to: TxKind::Call(from),
        value: U256::ZERO,
        access_list: Default::default(),
        input: Bytes::from(payload.encode()),
    };
    let signature = signer
        .sign_hash_sync(&tx.signature_hash())
        .map_err(|e| ChainError::Refused(format!("signing the anchor transaction: {e}")))?;
    let raw = TxEnvelope::from(tx.into_signed(signature)).encoded_2718();
    // Read back what was signed, so a signing bug cannot leave the node.
    let checked = decode_anchor_transaction(&raw, chain_id)?;
    if checked.from != from || checked.payload != *payload {
        return Err(ChainError::Integrity(
            "the signed anchor transaction does not read back as signed".into(),
        ));
    }
    Ok((raw, checked))
}

/// Reads an anchor from the raw signed transaction bytes alone (what
/// `eth_getRawTransactionByHash` returns), so an auditor can check what was
/// signed without trusting the node's JSON: it must be one EIP-1559
/// transaction for `chain_id`, sent by its signer to itself, whose calldata
/// is an anchor payload.
///
/// ```
/// use stratosdb_chain_anchor::stratos::decode_anchor_transaction;
/// let err = decode_anchor_transaction(&[0x02, 0xc0], 2048).unwrap_err();
/// assert!(err.to_string().contains("not a signed transaction"));
/// ```
pub fn decode_anchor_transaction(raw: &[u8], chain_id: u64) -> Result<AnchorTx, ChainError> {
    let envelope = TxEnvelope::decode_2718_exact(raw)
        .map_err(|e| ChainError::Integrity(format!("not a signed transaction: {e}")))?;
    let tx = check_anchor_envelope(&envelope, chain_id)?;
    let hash: [u8; 32] = keccak256(raw).0;
    if hash != tx.tx_hash {
        return Err(ChainError::Integrity(
            "the transaction's bytes do not hash to its hash".into(),
        ));
    }
    Ok(tx)
}

/// The checks of [`decode_anchor_transaction`] on a decoded transaction
/// (from `eth_getTransactionByHash`); the hash is recomputed from its fields.
pub(crate) fn check_anchor_envelope(
    envelope: &TxEnvelope,
    chain_id: u64,
) -> Result<AnchorTx, ChainError> {
    let refuse = |why: String| Err(ChainError::Integrity(why));
    let TxEnvelope::Eip1559(signed) = envelope else {
        return refuse(format!(
            "a type {} transaction; an anchor is an EIP-1559 (type 2) transaction",
            u8::from(envelope.tx_type())
        ));
    };
    let tx = signed.tx();
    if tx.chain_id != chain_id {
        return refuse(format!(
            "signed for chain id {}, not {chain_id}",
            tx.chain_id
        ));
    }
    let from = signed
        .signature()
        .recover_address_from_prehash(&tx.signature_hash())
        .map_err(|e| ChainError::Integrity(format!("bad signature: {e}")))?;
    if tx.to != TxKind::Call(from) {
        let to = match tx.to {
            TxKind::Call(to) => to.to_string(),
            TxKind::Create => "a contract creation".to_string(),
        };
        return refuse(format!(
            "not an anchor: sent from {from} to {to}; an anchor is sent to its sender"
        ));
    }
    let payload = AnchorPayload::decode(&tx.input)
        .map_err(|e| ChainError::Integrity(format!("not an anchor: calldata is a {e}")))?;
    Ok(AnchorTx {
        tx_hash: hash_of(signed),
        chain_id,
        from,
        nonce: tx.nonce,
        gas_limit: tx.gas_limit,
        max_fee_per_gas: tx.max_fee_per_gas,
        max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
        payload,
    })
}

/// The hash from the fields and signature, never a hash a node reported.
fn hash_of(signed: &Signed<TxEip1559>) -> [u8; 32] {
    let hash: B256 = signed.tx().tx_hash(signed.signature());
    hash.0
}

/// The Stratos backend's [`crate::Submission::detail`]: the signed
/// transaction and, for people reading it, what it says. Only `raw` is
/// trusted; the rest must agree with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Detail {
    /// The signed transaction, `0x` hex (EIP-2718 bytes).
    pub raw: String,
    pub tx_hash: String,
    pub chain_id: u64,
    pub from: String,
    pub nonce: u64,
    pub gas_limit: u64,
    /// Decimal strings: wei amounts can pass 2^53.
    pub max_fee_per_gas: String,
    pub max_priority_fee_per_gas: String,
}

impl Detail {
    pub fn new(raw: &[u8], tx: &AnchorTx) -> Detail {
        Detail {
            raw: format!("0x{}", hex::encode(raw)),
            tx_hash: format!("0x{}", hex::encode(tx.tx_hash)),
            chain_id: tx.chain_id,
            from: tx.from.to_string(),
            nonce: tx.nonce,
            gas_limit: tx.gas_limit,
            max_fee_per_gas: tx.max_fee_per_gas.to_string(),
            max_priority_fee_per_gas: tx.max_priority_fee_per_gas.to_string(),
        }
    }

    /// Reads a submission's detail: decodes and checks its raw transaction,
    /// and refuses a detail whose other fields or payload disagree with it.
    pub fn read(
        detail: &serde_json::Value,
        payload: &AnchorPayload,
        chain_id: u64,
    ) -> Result<(Vec<u8>, AnchorTx), ChainError> {
        let bad = |why: String| ChainError::Refused(format!("submission detail: {why}"));
        let stored: Detail =
            serde_json::from_value(detail.clone()).map_err(|e| bad(e.to_string()))?;
        let hex_text = stored.raw.strip_prefix("0x").unwrap_or(&stored.raw);
        let raw = hex::decode(hex_text).map_err(|e| bad(format!("raw is not hex: {e}")))?;
        let tx = decode_anchor_transaction(&raw, chain_id)?;
        if Detail::new(&raw, &tx) != stored {
            return Err(bad("its fields do not match its signed transaction".into()));
        }
        if tx.payload != *payload {
            return Err(bad("its transaction carries another payload".into()));
        }
        Ok((raw, tx))
    }

    pub fn to_value(&self) -> serde_json::Value {
        // A struct of strings and integers always serializes.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> AnchorPayload {
        AnchorPayload {
            cluster_id: [1; 32],
            epoch: 7,
            cluster_root: [2; 32],
            leaf_count: 3,
            previous: [0; 32],
        }
    }

    fn fees() -> Fees {
        Fees {
            max_fee_per_gas: 3_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
        }
    }

    #[test]
    fn signed_anchor_reads_back_from_its_bytes_alone() {
        let signer = PrivateKeySigner::random();
        let (raw, tx) = sign_anchor(&signer, 2048, 5, 30_000, fees(), &payload()).unwrap();
        assert_eq!(raw[0], 0x02, "an EIP-1559 transaction");
        assert_eq!(tx.from, signer.address());
        assert_eq!(tx.nonce, 5);
        assert_eq!(tx.tx_hash, keccak256(&raw).0);
        assert_eq!(decode_anchor_transaction(&raw, 2048).unwrap(), tx);
        let err = decode_anchor_transaction(&raw, 1).unwrap_err().to_string();
        assert!(err.contains("chain id 2048, not 1"), "{err}");
    }

    #[test]
    fn every_single_bit_flip_of_the_raw_transaction_is_refused_or_changes_it() {
        let signer = PrivateKeySigner::random();
        let (raw, tx) = sign_anchor(&signer, 2048, 0, 30_000, fees(), &payload()).unwrap();
        for byte in 0..raw.len() {
            for bit in 0..8 {
                let mut flipped = raw.clone();
                flipped[byte] ^= 1 << bit;
                if let Ok(other) = decode_anchor_transaction(&flipped, 2048) {
                    // A flip in a signed field recovers another signer, which
                    // then is not the recipient; none may pass as the same.
                    assert_ne!(other, tx, "byte {byte} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn a_transaction_to_someone_else_or_with_other_calldata_is_not_an_anchor() {
        let signer = PrivateKeySigner::random();
        let sign = |to: TxKind, input: Vec<u8>| {
            let tx = TxEip1559 {
                chain_id: 2048,
                gas_limit: 30_000,
                max_fee_per_gas: 2,
                max_priority_fee_per_gas: 1,
                to,
                input: input.into(),
                ..Default::default()
            };
            let sig = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
            TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
        };
        let other = sign(TxKind::Call(Address::repeat_byte(9)), payload().encode());
        let err = decode_anchor_transaction(&other, 2048)
            .unwrap_err()
            .to_string();
        assert!(err.contains("an anchor is sent to its sender"), "{err}");
        let other = sign(TxKind::Call(signer.address()), b"hello".to_vec());
        let err = decode_anchor_transaction(&other, 2048)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an anchor: calldata"), "{err}");
    }

    #[test]
    fn replacement_fees_are_over_ten_percent_higher() {
        let old = fees();
        let new = old.bumped(Fees {
            max_fee_per_gas: 1,
            max_priority_fee_per_gas: 1,
        });
        assert!(new.max_fee_per_gas * 10 > old.max_fee_per_gas * 11);
        assert!(new.max_priority_fee_per_gas * 10 > old.max_priority_fee_per_gas * 11);
        let market = Fees {
            max_fee_per_gas: 10_000_000_000,
            max_priority_fee_per_gas: 5_000_000_000,
        };
        assert_eq!(old.bumped(market), market);
    }

    #[test]
    fn detail_round_trips_and_refuses_tampering() {
        let signer = PrivateKeySigner::random();
        let (raw, tx) = sign_anchor(&signer, 2048, 1, 30_000, fees(), &payload()).unwrap();
        let value = Detail::new(&raw, &tx).to_value();
        assert_eq!(Detail::read(&value, &payload(), 2048).unwrap(), (raw, tx));
        let mut changed = value.clone();
        changed["nonce"] = 2.into();
        assert!(Detail::read(&changed, &payload(), 2048).is_err());
        let mut other = payload();
        other.epoch += 1;
        assert!(Detail::read(&value, &other, 2048).is_err());
        assert!(Detail::read(&serde_json::json!({}), &payload(), 2048).is_err());
    }
}
