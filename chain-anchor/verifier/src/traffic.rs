//! Proof of Traffic: the formats a paying client, a serving node and an
//! auditor share (`docs/traffic.md`, byte for byte).
//!
//! - [`Address`]: an account, the 20 bytes of an Ethereum-style secp256k1
//!   address, printed as `0x…` (EIP-55) or as its Stratos `st1…` form;
//! - [`wei`]: STOS amounts as `u128` wei, parsed and printed without floats;
//! - [`RequestAuth`]: the EIP-191 signature a payer puts on every API request,
//!   carried in headers, and its recovery;
//! - [`Prices`] and [`Receipt`]: what a reply cost, signed by the node that
//!   served it;
//! - [`DepositEntry`]: a deposit on the local ledger, signed by its account;
//! - [`VolumeReport`] and [`SettlementEntry`]: an epoch's settlement, the
//!   receipts folded per payer and per node, signed by two thirds of the nodes.

mod address;
mod deposit;
mod payout;
mod receipt;
mod request;
mod settlement;
pub mod wei;

pub use address::Address;
pub use deposit::{DEPOSIT_LEN, DepositEntry, deposit_message};
pub use payout::{PAYOUT_LEN, PayoutEntry};
pub use receipt::{BatchProof, MAX_BATCH, Prices, RECEIPT_VERSION, Receipt, ReceiptChecker};
pub use request::{
    HEADER_ADDRESS, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, RequestAuth, RequestSigner,
    eip191_hash, keccak256, recover, request_hash, request_message,
};
pub use settlement::{
    NodeVolume, ReportSignature, SettlementEntry, VolumeBuilder, VolumeReport, WalletVolume,
    receipts_hash,
};
