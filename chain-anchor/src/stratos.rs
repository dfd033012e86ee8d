//! The Stratos chain backend: one EIP-1559 transaction per anchor, from the
//! configured key's address to itself, its calldata the 113-byte
//! [`AnchorPayload`], over Ethereum JSON-RPC (Stratos's EVM: chain id 2048,
//! London rules). The format and the checks are in `docs/chain.md`, "The
//! Stratos backend".
//!
//! [`StratosChain`]'s methods block: it owns a small tokio runtime and waits
//! on it. Call them from a plain thread (in async code, from
//! `tokio::task::spawn_blocking`), never from inside an async runtime, where
//! they return [`ChainError::Misuse`].

mod funds;
mod key;
mod rpc;
mod tx;

use std::path::PathBuf;

use alloy::primitives::{Address, B256, Bytes, U64, U128};
use alloy::rpc::types::{FeeHistory, Transaction};
use alloy::signers::local::PrivateKeySigner;
use serde::Deserialize;
use stratosdb_verifier::AnchorPayload;

pub use key::{generate_key_file, load_key_file};
pub use tx::{AnchorTx, decode_anchor_transaction};

use self::rpc::Rpc;
use self::tx::{Detail, Fees, check_anchor_envelope, sign_anchor};
use crate::{AnchorRecord, Chain, ChainError, ChainInfo, ChainRef, Submission, SubmissionStatus};

/// Stratos mainnet's EVM chain id.
pub const STRATOS_CHAIN_ID: u64 = 2048;

/// Where the Stratos backend sends anchors, and with which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StratosConfig {
    /// An Ethereum JSON-RPC endpoint, `http://HOST:PORT`.
    pub rpc_url: String,
    /// The EVM chain id the node must report (2048 on Stratos mainnet).
    pub chain_id: u64,
    /// The hex secp256k1 private key that signs and pays for anchors
    /// (mode 0600; see [`load_key_file`]).
    pub key_file: PathBuf,
}

/// The Stratos chain as a [`Chain`]. See the module documentation.
pub struct StratosChain {
    config: StratosConfig,
    rpc: Rpc,
    signer: PrivateKeySigner,
}

/// The receipt fields the backend reads (lenient about the rest, which
/// Ethermint and geth fill differently).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Receipt {
    transaction_hash: B256,
    block_hash: Option<B256>,
    block_number: Option<U64>,
    status: Option<U64>,
    gas_used: Option<U64>,
}

#[derive(Debug, Deserialize)]
struct BlockHeader {
    hash: B256,
    timestamp: U64,
}

/// JSON-RPC parameters of a method that takes none.
const NO_PARAMS: [(); 0] = [];

impl StratosChain {
    /// Loads the key and checks that the node at `rpc_url` is on the
    /// configured chain (`eth_chainId`), failing clearly otherwise.
    pub fn connect(config: &StratosConfig) -> Result<StratosChain, ChainError> {
        let signer = load_key_file(&config.key_file)?;
        Self::connect_with(config, signer)
    }

    /// A backend that only reads (an auditor's): a random key that never
    /// signs anything, so no key file is needed.
    pub fn connect_read_only(rpc_url: &str, chain_id: u64) -> Result<StratosChain, ChainError> {
        let config = StratosConfig {
            rpc_url: rpc_url.to_string(),
            chain_id,
            key_file: PathBuf::new(),
        };
        Self::connect_with(&config, PrivateKeySigner::random())
    }

    fn connect_with(
        config: &StratosConfig,
        signer: PrivateKeySigner,
    ) -> Result<StratosChain, ChainError> {
        let rpc = Rpc::new(&config.rpc_url)?;
        let actual: U64 = rpc.call("eth_chainId", NO_PARAMS)?;
        if actual.to::<u64>() != config.chain_id {
            return Err(ChainError::WrongChainId {
                rpc_url: rpc.url().to_string(),
                configured: config.chain_id,
                actual: actual.to::<u64>(),
            });
        }
        Ok(StratosChain {
            config: config.clone(),
            rpc,
            signer,
        })
    }

    /// The address that sends (and receives) this backend's anchors.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// Reads the anchor of transaction `tx_hash` from its raw signed bytes
    /// (`eth_getRawTransactionByHash`), trusting nothing but the signature:
    /// what an auditor checks. Inclusion is [`Chain::read_anchor`]'s job.
    pub fn read_raw_anchor(&self, tx_hash: [u8; 32]) -> Result<AnchorTx, ChainError> {
        let raw: Option<Bytes> = self
            .rpc
            .call("eth_getRawTransactionByHash", (B256::from(tx_hash),))?;
        let raw = raw.ok_or_else(|| ChainError::NotFound(self.reference(tx_hash).to_string()))?;
        let tx = decode_anchor_transaction(&raw, self.config.chain_id)?;
        if tx.tx_hash != tx_hash {
            return Err(ChainError::Integrity(format!(
                "asked for transaction 0x{}, the node's bytes are 0x{}",
                hex::encode(tx_hash),
                hex::encode(tx.tx_hash)
            )));
        }
        Ok(tx)
    }

    fn reference(&self, tx_hash: [u8; 32]) -> ChainRef {
        ChainRef::Evm {
            chain_id: self.config.chain_id,
            tx_hash,
        }
    }

    /// `eth_getTransactionCount` at `block` ("latest" or "pending").
    fn nonce(&self, address: Address, block: &'static str) -> Result<u64, ChainError> {
        let n: U64 = self.rpc.call("eth_getTransactionCount", (address, block))?;
        Ok(n.to())
    }

    /// Fees for a transaction now: twice the next block's base fee plus the
    /// node's suggested tip, from `eth_feeHistory` and
    /// `eth_maxPriorityFeePerGas`, or from `eth_gasPrice` on a node that
    /// offers neither.
    fn fees(&self) -> Result<Fees, ChainError> {
        let history = self
            .rpc
            .try_call::<_, FeeHistory>("eth_feeHistory", ("0x1", "latest", NO_PARAMS))?;
        let base = history
            .ok()
            .and_then(|h| h.base_fee_per_gas.last().copied());
        let tip = self
            .rpc
            .try_call::<_, U128>("eth_maxPriorityFeePerGas", NO_PARAMS)?
            .ok()
            .map(|t| t.to::<u128>());
        let (base, tip) = match (base, tip) {
            (Some(base), Some(tip)) => (base, tip),
            (base, tip) => {
                let price: U128 = self.rpc.call("eth_gasPrice", NO_PARAMS)?;
                let price = price.to::<u128>();
                let base = base.unwrap_or(price);
                (base, tip.unwrap_or(price.saturating_sub(base)))
            }
        };
        Ok(Fees {
            max_fee_per_gas: base.saturating_mul(2).saturating_add(tip).max(1),
            max_priority_fee_per_gas: tip,
        })
    }

    /// `eth_estimateGas` of the anchor transaction, plus 10% (unused gas is
    /// not paid for under London rules).
    fn gas_limit(&self, payload: &AnchorPayload) -> Result<u64, ChainError> {
        let data = format!("0x{}", hex::encode(payload.encode()));
        // Both names of the calldata field: older nodes know only `data`.
        let call = serde_json::json!({
            "from": self.address(),
            "to": self.address(),
            "value": "0x0",
            "data": data,
            "input": data,
        });
        let gas: U64 = self.rpc.call("eth_estimateGas", (call,))?;
        let gas = gas.to::<u64>();
        Ok(gas.saturating_add(gas / 10))
    }

    fn receipt(&self, tx_hash: [u8; 32]) -> Result<Option<Receipt>, ChainError> {
        let receipt: Option<Receipt> = self
            .rpc
            .call("eth_getTransactionReceipt", (B256::from(tx_hash),))?;
        match receipt {
            Some(r) if r.transaction_hash.0 != tx_hash => Err(ChainError::Integrity(format!(
                "asked for the receipt of 0x{}, got one of {}",
                hex::encode(tx_hash),
                r.transaction_hash
            ))),
            // A receipt without a block is not an inclusion.
            Some(r) if r.block_number.is_none() || r.block_hash.is_none() => Ok(None),
            other => Ok(other),
        }
    }

    fn transaction(&self, tx_hash: [u8; 32]) -> Result<Option<Transaction>, ChainError> {
        self.rpc
            .call("eth_getTransactionByHash", (B256::from(tx_hash),))
    }
}

impl Receipt {
    /// `Ok(block number)` for a successful transaction, `Err(reason)` for a
    /// failed one.
    fn outcome(&self) -> Result<u64, String> {
        let block = self.block_number.map(|b| b.to::<u64>()).unwrap_or(0);
        match self.status.map(|s| s.to::<u64>()) {
            Some(1) => Ok(block),
            Some(_) => Err(format!(
                "the transaction failed (receipt status 0) in block {block}, gas used {}",
                self.gas_used.map(|g| g.to::<u64>()).unwrap_or(0)
            )),
            None => Err(format!(
                "the receipt in block {block} has no status (a pre-Byzantium chain?)"
            )),
        }
    }
}

impl Chain for StratosChain {
    fn settlement_address(&self) -> Option<stratosdb_verifier::traffic::Address> {
        Some(self.funds_settlement_address())
    }

    fn read_deposit(
        &self,
        cluster_id: &[u8; 32],
        reference: &ChainRef,
    ) -> Result<crate::DepositRecord, ChainError> {
        self.funds_read_deposit(cluster_id, reference)
    }

    fn transfer(
        &self,
        to: stratosdb_verifier::traffic::Address,
        amount: u128,
    ) -> Result<ChainRef, ChainError> {
        self.funds_transfer(to, amount)
    }

    fn prepare_settlement(
        &self,
        entry: &stratosdb_verifier::traffic::SettlementEntry,
        replacing: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ChainError> {
        self.funds_prepare_settlement(entry, replacing)
    }

    fn send_settlement(
        &self,
        entry: &stratosdb_verifier::traffic::SettlementEntry,
        detail: &serde_json::Value,
    ) -> Result<(), ChainError> {
        self.funds_send_settlement(entry, detail)
    }

    fn settlement_status(
        &self,
        entry: &stratosdb_verifier::traffic::SettlementEntry,
        detail: &serde_json::Value,
    ) -> Result<SubmissionStatus, ChainError> {
        self.funds_settlement_status(entry, detail)
    }

    fn read_settlement_at(
        &self,
        reference: &ChainRef,
    ) -> Result<stratosdb_verifier::traffic::SettlementEntry, ChainError> {
        self.funds_read_settlement_at(reference)
    }

    fn prepare_payout(
        &self,
        payout: &crate::Payout,
        replacing: Option<&crate::Payout>,
    ) -> Result<crate::Payout, ChainError> {
        self.funds_prepare_payout(payout, replacing)
    }

    fn send_payout(&self, payout: &crate::Payout) -> Result<(), ChainError> {
        self.funds_send_payout(payout)
    }

    fn payout_status(&self, payout: &crate::Payout) -> Result<SubmissionStatus, ChainError> {
        self.funds_payout_status(payout)
    }

    fn info(&self) -> ChainInfo {
        ChainInfo {
            kind: "stratos".into(),
            chain_id: Some(self.config.chain_id),
            location: self.rpc.url().to_string(),
        }
    }

    /// Signs the anchor transaction: nonce from `eth_getTransactionCount(…,
    /// "pending")`, fees from the node, gas from `eth_estimateGas`. A
    /// replacement takes the nonce of the submission it replaces and fees
    /// over 10% higher, so the node accepts it in that one's place and at
    /// most one of the two is ever included.
    fn prepare(
        &self,
        payload: &AnchorPayload,
        replacing: Option<&Submission>,
    ) -> Result<Submission, ChainError> {
        let chain_id = self.config.chain_id;
        let (nonce, fees) = match replacing {
            None => (self.nonce(self.address(), "pending")?, self.fees()?),
            Some(old) => {
                if (old.payload.cluster_id, old.payload.epoch)
                    != (payload.cluster_id, payload.epoch)
                {
                    return Err(ChainError::Refused(format!(
                        "a submission of epoch {} can only replace one of the same cluster \
                         and epoch, not epoch {}",
                        payload.epoch, old.payload.epoch
                    )));
                }
                let (_, old_tx) = Detail::read(&old.detail, &old.payload, chain_id)?;
                if old_tx.from != self.address() {
                    return Err(ChainError::Refused(format!(
                        "the submission to replace was signed by {}, this node's key is {}",
                        old_tx.from,
                        self.address()
                    )));
                }
                let old_fees = Fees {
                    max_fee_per_gas: old_tx.max_fee_per_gas,
                    max_priority_fee_per_gas: old_tx.max_priority_fee_per_gas,
                };
                (old_tx.nonce, old_fees.bumped(self.fees()?))
            }
        };
        let gas_limit = self.gas_limit(payload)?;
        let (raw, tx) = sign_anchor(&self.signer, chain_id, nonce, gas_limit, fees, payload)?;
        Ok(Submission {
            payload: payload.clone(),
            detail: Detail::new(&raw, &tx).to_value(),
        })
    }

    /// `eth_sendRawTransaction`. If the node refuses it but already holds
    /// this very transaction (in its pool or in a block), the send is done.
    fn send(&self, submission: &Submission) -> Result<(), ChainError> {
        let (raw, tx) = Detail::read(
            &submission.detail,
            &submission.payload,
            self.config.chain_id,
        )?;
        let raw_hex = format!("0x{}", hex::encode(&raw));
        match self
            .rpc
            .try_call::<_, B256>("eth_sendRawTransaction", (raw_hex,))?
        {
            Ok(hash) if hash.0 == tx.tx_hash => Ok(()),
            Ok(hash) => Err(ChainError::Integrity(format!(
                "sent transaction 0x{}, the node names it {hash}",
                hex::encode(tx.tx_hash)
            ))),
            Err(refusal) => {
                // "already known", "nonce too low" for its own nonce, …: the
                // node's words differ; whether it holds the transaction does not.
                if self.transaction(tx.tx_hash)?.is_some() {
                    return Ok(());
                }
                if self.nonce(tx.from, "latest")? > tx.nonce {
                    return Err(ChainError::Refused(format!(
                        "nonce {} of {} is already used by another transaction ({}): \
                         check the status of this epoch's other submission",
                        tx.nonce, tx.from, refusal.message
                    )));
                }
                Err(ChainError::Refused(format!(
                    "eth_sendRawTransaction: {} (code {})",
                    refusal.message, refusal.code
                )))
            }
        }
    }

    /// A receipt makes it included (status 1) or failed (status 0); a
    /// transaction the node still holds is pending; one it no longer knows
    /// is dropped (evicted, or its nonce taken by another transaction: the
    /// caller checks its other submission, and a replacement with the same
    /// nonce can never be included next to one that was).
    fn status(&self, submission: &Submission) -> Result<SubmissionStatus, ChainError> {
        let (_, tx) = Detail::read(
            &submission.detail,
            &submission.payload,
            self.config.chain_id,
        )?;
        if let Some(receipt) = self.receipt(tx.tx_hash)? {
            return Ok(match receipt.outcome() {
                Ok(_) => SubmissionStatus::Included(self.reference(tx.tx_hash)),
                Err(reason) => SubmissionStatus::Failed(reason),
            });
        }
        // eth_getTransactionByHash answers for pool and block alike, so a
        // transaction mined since the receipt was asked for is not "dropped".
        if self.transaction(tx.tx_hash)?.is_some() {
            return Ok(SubmissionStatus::Pending);
        }
        Ok(SubmissionStatus::Dropped)
    }

    /// Reads the transaction and its receipt and checks: included, status 1,
    /// an EIP-1559 transaction signed for the configured chain id, its hash
    /// recomputed from its fields, sent by its signer to itself, calldata an
    /// anchor payload.
    fn read_anchor(&self, reference: &ChainRef) -> Result<AnchorRecord, ChainError> {
        let chain_id = self.config.chain_id;
        let ChainRef::Evm {
            chain_id: ref_chain,
            tx_hash,
        } = *reference
        else {
            return Err(ChainError::NotFound(format!(
                "{reference}: a local ledger reference, and this is EVM chain {chain_id}"
            )));
        };
        if ref_chain != chain_id {
            return Err(ChainError::Integrity(format!(
                "{reference} is on chain id {ref_chain}, this node is on {chain_id}"
            )));
        }
        let tx = self
            .transaction(tx_hash)?
            .ok_or_else(|| ChainError::NotFound(reference.to_string()))?;
        let envelope = tx.inner.into_inner();
        let anchor = check_anchor_envelope(&envelope, chain_id)
            .map_err(|e| ChainError::Integrity(format!("{reference}: {e}")))?;
        if anchor.tx_hash != tx_hash {
            return Err(ChainError::Integrity(format!(
                "{reference}: the node's transaction hashes to 0x{}",
                hex::encode(anchor.tx_hash)
            )));
        }
        let not_included =
            || ChainError::NotFound(format!("{reference}: not included in a block yet"));
        let receipt = self.receipt(tx_hash)?.ok_or_else(not_included)?;
        let block = receipt
            .outcome()
            .map_err(|why| ChainError::Integrity(format!("{reference}: {why}")))?;
        let header: BlockHeader = self
            .rpc
            .call::<_, Option<BlockHeader>>("eth_getBlockByNumber", (U64::from(block), false))?
            .ok_or_else(not_included)?;
        if Some(header.hash) != receipt.block_hash {
            return Err(ChainError::Unavailable(format!(
                "{reference}: block {block} changed while it was read (a reorganization); read again"
            )));
        }
        Ok(AnchorRecord {
            reference: *reference,
            payload: anchor.payload,
            submitter: anchor.from.to_string(),
            block,
            timestamp_ms: header.timestamp.to::<u64>().saturating_mul(1000),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(status: Option<&str>) -> Receipt {
        let mut json = serde_json::json!({
            "transactionHash": format!("0x{}", "ab".repeat(32)),
            "blockHash": format!("0x{}", "cd".repeat(32)),
            "blockNumber": "0x2a",
            "gasUsed": "0x5a3c",
            "logs": [],
        });
        if let Some(status) = status {
            json["status"] = status.into();
        }
        serde_json::from_value(json).unwrap()
    }

    // A self-send cannot revert, so anvil cannot show a failed anchor: the
    // receipt's reading is checked here.
    #[test]
    fn a_receipt_reads_as_included_or_failed_with_the_reason() {
        assert_eq!(receipt(Some("0x1")).outcome(), Ok(42));
        let failed = receipt(Some("0x0")).outcome().unwrap_err();
        assert!(
            failed.contains("status 0") && failed.contains("block 42"),
            "{failed}"
        );
        assert!(failed.contains("gas used 23100"), "{failed}");
        let unknown = receipt(None).outcome().unwrap_err();
        assert!(unknown.contains("no status"), "{unknown}");
    }
}
