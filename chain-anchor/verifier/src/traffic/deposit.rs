//! A deposit on the local ledger: the account's signed word that it puts
//! `amount` wei into a cluster (no STOS moves on a local ledger, so the
//! signature is the deposit). The ledger records it as entry kind 2; an
//! auditor checks the signature from the entry alone.

use super::{Address, RequestSigner, eip191_hash, request::recover};
use crate::VerifyError;

/// The version byte of a deposit entry.
pub const DEPOSIT_VERSION: u8 = 1;
/// Bytes of an encoded deposit entry.
pub const DEPOSIT_LEN: usize = 1 + 32 + 20 + 16 + 16 + 65;

/// The text the account signs (EIP-191), lines joined by `\n`.
pub fn deposit_message(
    cluster_id: &[u8; 32],
    account: &Address,
    amount: u128,
    nonce: &[u8; 16],
) -> String {
    format!(
        "stratosdb deposit\ncluster: {}\naccount: {}\namount: {amount}\nnonce: {}",
        hex::encode(cluster_id),
        account,
        hex::encode(nonce)
    )
}

/// A signed deposit, as the ledger's entry of kind 2 carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositEntry {
    pub cluster_id: [u8; 32],
    pub account: Address,
    pub amount: u128,
    pub nonce: [u8; 16],
    /// The account's signature (r ‖ s ‖ v) over [`deposit_message`].
    pub signature: [u8; 65],
}

impl DepositEntry {
    /// A deposit signed by `signer`'s account.
    pub fn sign(
        signer: &RequestSigner,
        cluster_id: [u8; 32],
        amount: u128,
        nonce: [u8; 16],
    ) -> DepositEntry {
        let account = signer.address();
        let message = deposit_message(&cluster_id, &account, amount, &nonce);
        DepositEntry {
            cluster_id,
            account,
            amount,
            nonce,
            signature: signer.sign_message(message.as_bytes()),
        }
    }

    /// `version ‖ cluster_id ‖ account ‖ u128be(amount) ‖ nonce ‖ signature`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DEPOSIT_LEN);
        out.push(DEPOSIT_VERSION);
        out.extend_from_slice(&self.cluster_id);
        out.extend_from_slice(&self.account.0);
        out.extend_from_slice(&self.amount.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.signature);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<DepositEntry, VerifyError> {
        let bad = |why: String| VerifyError::BadDeposit(why);
        if bytes.len() != DEPOSIT_LEN {
            return Err(bad(format!(
                "a deposit entry is {DEPOSIT_LEN} bytes, this one {}",
                bytes.len()
            )));
        }
        if bytes[0] != DEPOSIT_VERSION {
            return Err(bad(format!("unknown deposit version {}", bytes[0])));
        }
        let take = |from: usize, len: usize| &bytes[from..from + len];
        let mut cluster_id = [0; 32];
        cluster_id.copy_from_slice(take(1, 32));
        let mut account = [0; 20];
        account.copy_from_slice(take(33, 20));
        let mut amount = [0; 16];
        amount.copy_from_slice(take(53, 16));
        let mut nonce = [0; 16];
        nonce.copy_from_slice(take(69, 16));
        let mut signature = [0; 65];
        signature.copy_from_slice(take(85, 65));
        Ok(DepositEntry {
            cluster_id,
            account: Address(account),
            amount: u128::from_be_bytes(amount),
            nonce,
            signature,
        })
    }

    /// Checks that the account signed this deposit, of a positive amount.
    pub fn verify(&self) -> Result<(), VerifyError> {
        if self.amount == 0 {
            return Err(VerifyError::BadDeposit("a deposit of 0 wei".into()));
        }
        let message = deposit_message(&self.cluster_id, &self.account, self.amount, &self.nonce);
        let signer = recover(&eip191_hash(message.as_bytes()), &self.signature)
            .map_err(|e| VerifyError::BadDeposit(e.to_string()))?;
        if signer != self.account {
            return Err(VerifyError::BadDeposit(format!(
                "the deposit is not signed by {} (signed by {signer})",
                self.account
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_deposit_round_trips_and_every_flipped_bit_is_refused() {
        let signer = RequestSigner::from_bytes(&[5; 32]).unwrap();
        let entry = DepositEntry::sign(&signer, [1; 32], 12_345, [2; 16]);
        entry.verify().unwrap();
        let bytes = entry.encode();
        assert_eq!(bytes.len(), DEPOSIT_LEN);
        assert_eq!(DepositEntry::decode(&bytes).unwrap(), entry);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let refused = DepositEntry::decode(&damaged).and_then(|d| d.verify());
            assert!(refused.is_err(), "bit {bit} flipped was accepted");
        }
        assert!(DepositEntry::decode(&bytes[1..]).is_err());
    }
}
