//! STOS on the Stratos backend (`docs/traffic.md`): the settlement address
//! (this backend's key), deposits as plain transfers to it, and settlements
//! as transactions to itself whose calldata is the [`SettlementEntry`].

use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, Transaction as _, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::primitives::{Address, B256, Bytes, TxKind, U64, U256, keccak256};
use alloy::signers::SignerSync;
use serde::{Deserialize, Serialize};
use stratosdb_verifier::traffic::{self, SettlementEntry};

use super::tx::Fees;
use super::{BlockHeader, StratosChain};
use crate::{ChainError, ChainRef, DepositRecord, SubmissionStatus};

/// Gas of a plain transfer.
const TRANSFER_GAS: u64 = 21_000;
/// How long [`StratosChain::transfer`] waits for inclusion.
const TRANSFER_WAIT: Duration = Duration::from_secs(60);

fn to_verifier(a: Address) -> traffic::Address {
    traffic::Address(a.0.0)
}

fn to_alloy(a: traffic::Address) -> Address {
    Address::from(a.0)
}

/// A signed settlement or payout transaction, as the cluster records it
/// before it is sent (so that it is only ever sent again, or replaced with
/// the same nonce).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TxDetail {
    pub raw: String,
    pub tx_hash: String,
    pub nonce: u64,
    pub max_fee_per_gas: String,
    pub max_priority_fee_per_gas: String,
}

/// The address that signed a legacy, EIP-2930 or EIP-1559 transaction.
fn signer_of(envelope: &TxEnvelope) -> Result<Address, String> {
    let recovered = match envelope {
        TxEnvelope::Legacy(s) => s
            .signature()
            .recover_address_from_prehash(&s.tx().signature_hash()),
        TxEnvelope::Eip2930(s) => s
            .signature()
            .recover_address_from_prehash(&s.tx().signature_hash()),
        TxEnvelope::Eip1559(s) => s
            .signature()
            .recover_address_from_prehash(&s.tx().signature_hash()),
        other => {
            return Err(format!(
                "a type {} transaction, not a transfer",
                u8::from(other.tx_type())
            ));
        }
    };
    recovered.map_err(|e| format!("bad signature: {e}"))
}

fn payout_entry(payout: &crate::Payout) -> traffic::PayoutEntry {
    traffic::PayoutEntry {
        cluster_id: payout.cluster_id,
        id: payout.id,
        to: payout.to,
        amount: payout.amount,
    }
}

impl StratosChain {
    /// Signs an EIP-1559 transaction from this backend's key.
    fn sign_tx(
        &self,
        nonce: u64,
        gas_limit: u64,
        fees: Fees,
        to: Address,
        value: u128,
        input: Vec<u8>,
    ) -> Result<(Vec<u8>, [u8; 32]), ChainError> {
        let tx = TxEip1559 {
            chain_id: self.config.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            to: TxKind::Call(to),
            value: U256::from(value),
            access_list: Default::default(),
            input: Bytes::from(input),
        };
        let signature = self
            .signer
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| ChainError::Refused(format!("signing a transaction: {e}")))?;
        let raw = TxEnvelope::from(tx.into_signed(signature)).encoded_2718();
        let hash = keccak256(&raw).0;
        Ok((raw, hash))
    }

    /// `eth_sendRawTransaction`; a node that already holds it is fine.
    fn send_raw(&self, raw: &[u8], tx_hash: [u8; 32]) -> Result<(), ChainError> {
        match self.rpc.try_call::<_, B256>(
            "eth_sendRawTransaction",
            (format!("0x{}", hex::encode(raw)),),
        )? {
            Ok(hash) if hash.0 == tx_hash => Ok(()),
            Ok(hash) => Err(ChainError::Integrity(format!(
                "sent transaction 0x{}, the node names it {hash}",
                hex::encode(tx_hash)
            ))),
            Err(refusal) => {
                if self.transaction(tx_hash)?.is_some() {
                    return Ok(());
                }
                Err(ChainError::Refused(format!(
                    "eth_sendRawTransaction: {} (code {})",
                    refusal.message, refusal.code
                )))
            }
        }
    }

    /// Included and successful: its block; failed: the reason; else pending
    /// or dropped.
    fn tx_status(&self, tx_hash: [u8; 32]) -> Result<SubmissionStatus, ChainError> {
        if let Some(receipt) = self.receipt(tx_hash)? {
            return Ok(match receipt.outcome() {
                Ok(_) => SubmissionStatus::Included(self.reference(tx_hash)),
                Err(reason) => SubmissionStatus::Failed(reason),
            });
        }
        if self.transaction(tx_hash)?.is_some() {
            return Ok(SubmissionStatus::Pending);
        }
        Ok(SubmissionStatus::Dropped)
    }

    fn evm_hash(&self, reference: &ChainRef) -> Result<[u8; 32], ChainError> {
        match *reference {
            ChainRef::Evm { chain_id, tx_hash } if chain_id == self.config.chain_id => Ok(tx_hash),
            _ => Err(ChainError::NotFound(format!(
                "{reference} is not a transaction of EVM chain {}",
                self.config.chain_id
            ))),
        }
    }

    /// The transaction `reference` names, decoded and its signer recovered,
    /// with the block that includes it (successfully) and that block's time.
    fn included(
        &self,
        reference: &ChainRef,
    ) -> Result<(TxEnvelope, Address, u64, u64), ChainError> {
        let tx_hash = self.evm_hash(reference)?;
        let raw: Option<Bytes> = self
            .rpc
            .call("eth_getRawTransactionByHash", (B256::from(tx_hash),))?;
        let raw = raw.ok_or_else(|| ChainError::NotFound(reference.to_string()))?;
        if keccak256(&raw).0 != tx_hash {
            return Err(ChainError::Integrity(format!(
                "{reference}: the node's bytes hash to another transaction"
            )));
        }
        let envelope = TxEnvelope::decode_2718_exact(&raw)
            .map_err(|e| ChainError::Integrity(format!("{reference}: {e}")))?;
        if envelope.chain_id() != Some(self.config.chain_id) {
            return Err(ChainError::Integrity(format!(
                "{reference} is not signed for chain id {}",
                self.config.chain_id
            )));
        }
        let from =
            signer_of(&envelope).map_err(|e| ChainError::Integrity(format!("{reference}: {e}")))?;
        let not_included =
            || ChainError::NotFound(format!("{reference}: not included in a block yet"));
        let receipt = self.receipt(tx_hash)?.ok_or_else(not_included)?;
        let block = receipt
            .outcome()
            .map_err(|why| ChainError::Refused(format!("{reference}: {why}")))?;
        let header: BlockHeader = self
            .rpc
            .call::<_, Option<BlockHeader>>("eth_getBlockByNumber", (U64::from(block), false))?
            .ok_or_else(not_included)?;
        Ok((
            envelope,
            from,
            block,
            header.timestamp.to::<u64>().saturating_mul(1000),
        ))
    }

    pub(crate) fn funds_settlement_address(&self) -> traffic::Address {
        to_verifier(self.address())
    }

    /// Sends `amount` wei to `to` and waits for its inclusion.
    pub(crate) fn funds_transfer(
        &self,
        to: traffic::Address,
        amount: u128,
    ) -> Result<ChainRef, ChainError> {
        let nonce = self.nonce(self.address(), "pending")?;
        let fees = self.fees()?;
        let (raw, hash) =
            self.sign_tx(nonce, TRANSFER_GAS, fees, to_alloy(to), amount, Vec::new())?;
        self.send_raw(&raw, hash)?;
        let deadline = Instant::now() + TRANSFER_WAIT;
        loop {
            match self.tx_status(hash)? {
                SubmissionStatus::Included(reference) => return Ok(reference),
                SubmissionStatus::Failed(why) => return Err(ChainError::Refused(why)),
                _ if Instant::now() >= deadline => {
                    return Err(ChainError::Unavailable(format!(
                        "transfer 0x{} not included within {TRANSFER_WAIT:?}",
                        hex::encode(hash)
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// A deposit: an included, successful transfer of value to the
    /// settlement address. (An EVM transfer names no cluster: the settlement
    /// address is the cluster's.)
    pub(crate) fn funds_read_deposit(
        &self,
        cluster_id: &[u8; 32],
        reference: &ChainRef,
    ) -> Result<DepositRecord, ChainError> {
        let (envelope, from, block, timestamp_ms) = self.included(reference)?;
        if envelope.to() != Some(self.address()) {
            return Err(ChainError::Refused(format!(
                "{reference} is not a transfer to the settlement address {}",
                self.address()
            )));
        }
        let amount: u128 = envelope
            .value()
            .try_into()
            .map_err(|_| ChainError::Refused(format!("{reference}: the value is too large")))?;
        if amount == 0 {
            return Err(ChainError::Refused(format!(
                "{reference} transfers nothing"
            )));
        }
        Ok(DepositRecord {
            reference: *reference,
            cluster_id: *cluster_id,
            account: to_verifier(from),
            amount,
            block,
            timestamp_ms,
        })
    }

    /// Signs a transaction to `to` carrying `value` and `input`; a
    /// replacement takes the replaced one's nonce and higher fees (so at
    /// most one of them is ever included), or a fresh nonce when another
    /// transaction of this key has taken that one.
    fn prepare_tx(
        &self,
        to: Address,
        value: u128,
        input: Vec<u8>,
        replacing: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ChainError> {
        let (nonce, fees) = match replacing {
            None => (self.nonce(self.address(), "pending")?, self.fees()?),
            Some(old) => {
                let old: TxDetail = serde_json::from_value(old.clone())
                    .map_err(|e| ChainError::Refused(format!("transaction detail: {e}")))?;
                let parse = |s: &str| s.parse::<u128>().unwrap_or(0);
                let old_fees = Fees {
                    max_fee_per_gas: parse(&old.max_fee_per_gas),
                    max_priority_fee_per_gas: parse(&old.max_priority_fee_per_gas),
                };
                if self.nonce(self.address(), "latest")? > old.nonce {
                    // Its nonce went to another transaction of this key (an
                    // anchor): it can never be included, and the caller has
                    // checked that none of its own is. A fresh nonce.
                    (self.nonce(self.address(), "pending")?, self.fees()?)
                } else {
                    (old.nonce, old_fees.bumped(self.fees()?))
                }
            }
        };
        let data = format!("0x{}", hex::encode(&input));
        let call = serde_json::json!({
            "from": self.address(), "to": to, "value": format!("{value:#x}"),
            "data": data, "input": data,
        });
        let gas: U64 = self.rpc.call("eth_estimateGas", (call,))?;
        let gas = gas.to::<u64>();
        let (raw, hash) = self.sign_tx(nonce, gas + gas / 10, fees, to, value, input)?;
        let detail = TxDetail {
            raw: format!("0x{}", hex::encode(&raw)),
            tx_hash: format!("0x{}", hex::encode(hash)),
            nonce,
            max_fee_per_gas: fees.max_fee_per_gas.to_string(),
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas.to_string(),
        };
        serde_json::to_value(detail).map_err(|e| ChainError::Refused(e.to_string()))
    }

    /// The signed bytes of a recorded transaction, checked to carry `input`.
    fn recorded_tx(
        &self,
        detail: &serde_json::Value,
        input: &[u8],
    ) -> Result<(Vec<u8>, [u8; 32]), ChainError> {
        let bad = |why: String| ChainError::Refused(format!("transaction detail: {why}"));
        let d: TxDetail = serde_json::from_value(detail.clone()).map_err(|e| bad(e.to_string()))?;
        let raw = hex::decode(d.raw.trim_start_matches("0x")).map_err(|e| bad(e.to_string()))?;
        let envelope = TxEnvelope::decode_2718_exact(&raw).map_err(|e| bad(e.to_string()))?;
        if envelope.input().as_ref() != input {
            return Err(bad("its transaction carries something else".into()));
        }
        let hash = keccak256(&raw).0;
        Ok((raw, hash))
    }

    /// The settlement transaction: to itself, its calldata the entry.
    pub(crate) fn funds_prepare_settlement(
        &self,
        entry: &SettlementEntry,
        replacing: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ChainError> {
        self.prepare_tx(self.address(), 0, entry.encode(), replacing)
    }

    /// The payout transaction: `amount` to its account, its calldata the
    /// payout entry.
    pub(crate) fn funds_prepare_payout(
        &self,
        payout: &crate::Payout,
        replacing: Option<&crate::Payout>,
    ) -> Result<crate::Payout, ChainError> {
        let detail = self.prepare_tx(
            to_alloy(payout.to),
            payout.amount,
            payout_entry(payout).encode(),
            replacing.map(|r| &r.detail),
        )?;
        Ok(crate::Payout {
            detail,
            ..payout.clone()
        })
    }

    pub(crate) fn funds_send_payout(&self, payout: &crate::Payout) -> Result<(), ChainError> {
        let (raw, hash) = self.recorded_tx(&payout.detail, &payout_entry(payout).encode())?;
        self.send_raw(&raw, hash)
    }

    pub(crate) fn funds_payout_status(
        &self,
        payout: &crate::Payout,
    ) -> Result<SubmissionStatus, ChainError> {
        let (_, hash) = self.recorded_tx(&payout.detail, &payout_entry(payout).encode())?;
        self.tx_status(hash)
    }

    pub(crate) fn funds_send_settlement(
        &self,
        entry: &SettlementEntry,
        detail: &serde_json::Value,
    ) -> Result<(), ChainError> {
        let (raw, hash) = self.recorded_tx(detail, &entry.encode())?;
        self.send_raw(&raw, hash)
    }

    pub(crate) fn funds_settlement_status(
        &self,
        entry: &SettlementEntry,
        detail: &serde_json::Value,
    ) -> Result<SubmissionStatus, ChainError> {
        let (_, hash) = self.recorded_tx(detail, &entry.encode())?;
        self.tx_status(hash)
    }

    /// The settlement a transaction records: sent by its signer to itself,
    /// included and successful, its calldata a settlement entry.
    pub(crate) fn funds_read_settlement_at(
        &self,
        reference: &ChainRef,
    ) -> Result<SettlementEntry, ChainError> {
        let (envelope, from, _, _) = self.included(reference)?;
        if envelope.to() != Some(from) {
            return Err(ChainError::Refused(format!(
                "{reference} is not a settlement (not sent to its sender)"
            )));
        }
        SettlementEntry::decode(envelope.input())
            .map_err(|e| ChainError::Integrity(format!("{reference}: {e}")))
    }
}
