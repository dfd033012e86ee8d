//! The node's recovery of a request's signer, with libsecp256k1: the same
//! answers as the verifier's [`stratosdb_verifier::traffic::recover`] (k256,
//! which must build for wasm32), several times faster, which is most of what
//! a signed request costs the node (`BENCHMARKS.md`).

use std::collections::HashMap;
use std::sync::OnceLock;

use parking_lot::RwLock;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
use secp256k1::{Message, PublicKey, Secp256k1, VerifyOnly};
use stratosdb_verifier::VerifyError;
use stratosdb_verifier::traffic::{Address, keccak256};

fn context() -> &'static Secp256k1<VerifyOnly> {
    static CONTEXT: OnceLock<Secp256k1<VerifyOnly>> = OnceLock::new();
    CONTEXT.get_or_init(Secp256k1::verification_only)
}

/// Most public keys remembered (a few MB); past it the memory starts over.
const MAX_KEYS: usize = 100_000;

/// The public keys of the addresses seen: a request from a known address is
/// checked by comparing the key its signature recovers with that key,
/// which spares hashing the key into an address again. The key is always
/// recovered with the signature's own v: verifying (r, s) against the known
/// key alone would also accept the signature with v flipped, a tampered
/// header that recovers another address.
#[derive(Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<Address, PublicKey>>,
}

impl KeyCache {
    /// The address whose key made `signature` over `prehash`, as
    /// [`recover`] answers; `claimed`'s key is remembered once it signed.
    pub fn check(
        &self,
        claimed: &Address,
        prehash: &[u8; 32],
        signature: &[u8; 65],
    ) -> Result<Address, VerifyError> {
        let key = recover_public_key(prehash, signature)?;
        if self.keys.read().get(claimed) == Some(&key) {
            return Ok(*claimed);
        }
        let address = address_of(&key);
        if &address == claimed {
            let mut keys = self.keys.write();
            if keys.len() >= MAX_KEYS {
                keys.clear();
            }
            keys.insert(address, key);
        }
        Ok(address)
    }
}

impl KeyCache {
    /// The key remembered for `address`, if it signed a request already.
    pub fn known(&self, address: &Address) -> Option<PublicKey> {
        self.keys.read().get(address).copied()
    }
}

/// The address whose key made `signature` (r ‖ s ‖ v) over `prehash`;
/// refused as the verifier refuses: v not 27, 28, 0 or 1, a high s, a
/// signature that recovers no key.
pub fn recover(prehash: &[u8; 32], signature: &[u8; 65]) -> Result<Address, VerifyError> {
    recover_public_key(prehash, signature).map(|key| address_of(&key))
}

/// The public key `signature` (r ‖ s ‖ v) over `prehash` recovers to, with
/// the refusals of [`recover`].
fn recover_public_key(prehash: &[u8; 32], signature: &[u8; 65]) -> Result<PublicKey, VerifyError> {
    let bad = |why: &str| VerifyError::BadRequestSignature(why.to_string());
    let v = match signature[64] {
        27 | 28 => signature[64] - 27,
        0 | 1 => signature[64],
        _ => return Err(bad("signature's v is not 27 or 28")),
    };
    // Only low-s signatures: a high-s twin would be a second spelling.
    let plain =
        Signature::from_compact(&signature[..64]).map_err(|_| bad("malformed signature"))?;
    let mut low = plain;
    low.normalize_s();
    if low != plain {
        return Err(bad(
            "signature's s is not in the lower half of the curve order",
        ));
    }
    let id = RecoveryId::try_from(i32::from(v)).map_err(|_| bad("bad recovery id"))?;
    let recoverable = RecoverableSignature::from_compact(&signature[..64], id)
        .map_err(|_| bad("malformed signature"))?;
    context()
        .recover_ecdsa(Message::from_digest(*prehash), &recoverable)
        .map_err(|_| bad("the signature does not recover to any key"))
}

/// The Ethereum address of a key: the last 20 bytes of the keccak of its
/// uncompressed form.
fn address_of(key: &PublicKey) -> Address {
    let uncompressed = key.serialize_uncompressed();
    let digest = keccak256(&uncompressed[1..]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&digest[12..]);
    Address(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratosdb_verifier::traffic::{RequestSigner, eip191_hash};

    /// Differential: every signature, and every one-bit change of one,
    /// gets the same answer here as from the verifier.
    #[test]
    fn agrees_with_the_verifier() {
        let cache = KeyCache::default();
        for seed in 1..=20u8 {
            let signer = RequestSigner::from_bytes(&[seed; 32]).unwrap();
            let message = format!("request {seed}");
            let signature = signer.sign_message(message.as_bytes());
            let hash = eip191_hash(message.as_bytes());
            assert_eq!(recover(&hash, &signature).unwrap(), signer.address());
            assert_eq!(
                cache.check(&signer.address(), &hash, &signature).unwrap(),
                signer.address()
            );
            for bit in (0..65 * 8).step_by(7) {
                let mut changed = signature;
                changed[bit / 8] ^= 1 << (bit % 8);
                let ours = recover(&hash, &changed).ok();
                let theirs = stratosdb_verifier::traffic::recover(&hash, &changed).ok();
                assert_eq!(ours, theirs, "seed {seed}, bit {bit}");
                // With the key known, the same verdict on the claim.
                let cached = cache.check(&signer.address(), &hash, &changed).ok();
                assert_eq!(
                    cached == Some(signer.address()),
                    theirs == Some(signer.address()),
                    "seed {seed}, bit {bit}"
                );
            }
            // v flipped (each spelling): another key, so not the payer's,
            // though (r, s) verify against the payer's known key.
            let id = |v: u8| v.checked_sub(27).unwrap_or(v);
            for flipped in [27u8, 28, 0, 1] {
                if id(flipped) == id(signature[64]) {
                    continue;
                }
                let mut changed = signature;
                changed[64] = flipped;
                let theirs = stratosdb_verifier::traffic::recover(&hash, &changed).ok();
                assert_ne!(theirs, Some(signer.address()));
                assert_ne!(
                    cache.check(&signer.address(), &hash, &changed).ok(),
                    Some(signer.address()),
                    "seed {seed}: v {flipped} accepted for the known key"
                );
            }
        }
    }
}
