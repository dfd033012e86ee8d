//! A payout: STOS the cluster sends back to an account (a withdrawal of its
//! unspent funds). On the local ledger it is entry kind 4; on the Stratos
//! backend the same bytes are the calldata of the transfer that pays it.

use super::Address;
use crate::{Hash, VerifyError};

pub const PAYOUT_MAGIC: [u8; 4] = *b"SDBP";
pub const PAYOUT_VERSION: u8 = 1;
/// Bytes of an encoded payout.
pub const PAYOUT_LEN: usize = 4 + 1 + 32 + 8 + 20 + 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutEntry {
    pub cluster_id: Hash,
    /// The payout's id in its cluster.
    pub id: u64,
    pub to: Address,
    pub amount: u128,
}

impl PayoutEntry {
    /// `"SDBP" ‖ version ‖ cluster_id ‖ u64be id ‖ to ‖ u128be amount`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAYOUT_LEN);
        out.extend_from_slice(&PAYOUT_MAGIC);
        out.push(PAYOUT_VERSION);
        out.extend_from_slice(&self.cluster_id);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.to.0);
        out.extend_from_slice(&self.amount.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<PayoutEntry, VerifyError> {
        let bad = |why: &str| VerifyError::BadPayout(why.to_string());
        if bytes.len() != PAYOUT_LEN || bytes[..4] != PAYOUT_MAGIC {
            return Err(bad("not 81 bytes starting with SDBP"));
        }
        if bytes[4] != PAYOUT_VERSION {
            return Err(bad("unknown version"));
        }
        let mut cluster_id = [0; 32];
        cluster_id.copy_from_slice(&bytes[5..37]);
        let mut id = [0; 8];
        id.copy_from_slice(&bytes[37..45]);
        let mut to = [0; 20];
        to.copy_from_slice(&bytes[45..65]);
        let mut amount = [0; 16];
        amount.copy_from_slice(&bytes[65..81]);
        let entry = PayoutEntry {
            cluster_id,
            id: u64::from_be_bytes(id),
            to: Address(to),
            amount: u128::from_be_bytes(amount),
        };
        if entry.amount == 0 {
            return Err(bad("a payout of 0 wei"));
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payout_round_trips_and_garbage_is_refused() {
        let p = PayoutEntry {
            cluster_id: [1; 32],
            id: 9,
            to: Address([2; 20]),
            amount: 77,
        };
        let bytes = p.encode();
        assert_eq!(bytes.len(), PAYOUT_LEN);
        assert_eq!(PayoutEntry::decode(&bytes).unwrap(), p);
        assert!(PayoutEntry::decode(&bytes[1..]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(PayoutEntry::decode(&bad).is_err());
    }
}
