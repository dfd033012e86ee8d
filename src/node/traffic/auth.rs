//! Who pays for a request: its EIP-191 signature headers checked
//! (`docs/traffic.md`), or, on a `--dev` cluster, the dev account for an
//! unsigned request. Every refusal is a 401 whose message names the problem.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use stratosdb_verifier::traffic::{Address, RequestAuth};

use super::{DEV_ACCOUNT, Payer, Traffic};
use crate::node::backend::{BackendError, ErrorClass};

/// Most nonces remembered at once; past it, signed requests are refused
/// with 503 until old ones expire (a flood cannot make the node forget a
/// nonce that is still inside the window).
pub const MAX_NONCES: usize = 2_000_000;

fn unauthorized(code: &str, message: impl Into<String>) -> BackendError {
    BackendError::new(ErrorClass::Unauthorized, code, message)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The nonces seen within the window, per payer: a request seen once is
/// refused when it comes again. A nonce is forgotten when its timestamp
/// leaves the window, after which the request is refused as stale anyway.
pub struct ReplayMemory {
    window: Duration,
    /// [`MAX_NONCES`] (smaller in tests).
    limit: usize,
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    nonces: HashMap<(Address, [u8; 16]), u64>,
    /// `(expiry ms, key)` in arrival order, to forget expired nonces.
    order: VecDeque<(u64, (Address, [u8; 16]))>,
}

impl ReplayMemory {
    pub fn new(window: Duration) -> ReplayMemory {
        ReplayMemory {
            window,
            limit: MAX_NONCES,
            inner: Mutex::new(Seen::default()),
        }
    }

    /// Remembers `(payer, nonce)`; false if it was seen already.
    fn first_time(&self, payer: Address, auth: &RequestAuth) -> Result<bool, BackendError> {
        let expiry = auth
            .timestamp_ms
            .saturating_add(self.window.as_millis() as u64);
        let mut seen = self.inner.lock();
        let Seen { nonces, order } = &mut *seen;
        let key = (payer, auth.nonce);
        let full = nonces.len() >= self.limit;
        // One lookup (one hash of the key) finds it or its place.
        match nonces.entry(key) {
            Entry::Occupied(_) => Ok(false),
            Entry::Vacant(_) if full => Err(BackendError::new(
                ErrorClass::Unavailable,
                "busy",
                "this node remembers too many recent requests to check another for replay; retry shortly",
            )),
            Entry::Vacant(place) => {
                place.insert(expiry);
                order.push_back((expiry, key));
                Ok(true)
            }
        }
    }

    /// Forgets nonces whose timestamps left the window. Arrival order is
    /// near expiry order; a few out of order wait for the ones before them.
    pub fn forget_expired(&self) {
        let now = now_ms();
        let mut seen = self.inner.lock();
        while let Some(&(expiry, key)) = seen.order.front() {
            if expiry >= now {
                break;
            }
            seen.order.pop_front();
            seen.nonces.remove(&key);
        }
    }
}

impl Traffic {
    /// The payer of a request, checked: a signature by the claimed payer
    /// over this method, path, body, timestamp and nonce; a timestamp within
    /// the window; a nonce not seen before. Unsigned: the dev account on a
    /// `--dev` cluster, 401 otherwise.
    pub async fn authenticate<'a>(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Payer, BackendError> {
        let auth = RequestAuth::from_headers(header)
            .map_err(|e| unauthorized("bad_signature", e.to_string()))?;
        let Some(auth) = auth else {
            if self.config.dev {
                // A name for the request in its receipt: what, and when
                // (nobody signed it, so no EIP-191 keccak: SHA-256, which
                // the CPU does in hardware).
                let mut name = Sha256::new();
                name.update(format!("{method} {path_and_query} {} ", now_ms()));
                name.update(body);
                return Ok(Payer {
                    address: DEV_ACCOUNT,
                    request_hash: name.finalize().into(),
                });
            }
            return Err(unauthorized(
                "unsigned",
                "this request is not signed: sign it with the paying account's key \
                 (headers x-stratos-address, -timestamp, -nonce, -signature; see docs/traffic.md), \
                 e.g. `stratosdb shell --connect URL --key-file F`",
            ));
        };
        let now = now_ms();
        let window = self.config.window.as_millis() as u64;
        if auth.timestamp_ms.abs_diff(now) > window {
            return Err(unauthorized(
                "stale_request",
                format!(
                    "the request's timestamp {} is {} ms away from this node's clock {now}; \
                     requests must be signed within {} s of being served",
                    auth.timestamp_ms,
                    auth.timestamp_ms.abs_diff(now),
                    window / 1000
                ),
            ));
        }
        let cluster_id = self.cluster_id()?;
        let request_hash = auth.request_hash(&cluster_id, method, path_and_query, body);
        let signer = self
            .signatures
            .check(&auth.address, &request_hash, &auth.signature)
            .await
            .map_err(|e| unauthorized("bad_signature", e.to_string()))?;
        if signer != auth.address {
            return Err(unauthorized(
                "bad_signature",
                format!(
                    "the signature is not by {} (it does not match this request, or was made by another key)",
                    auth.address
                ),
            ));
        }
        if !self.replay.first_time(auth.address, &auth)? {
            return Err(unauthorized(
                "replayed_request",
                format!(
                    "the nonce {} of {} was used already: each request needs a fresh nonce",
                    hex::encode(auth.nonce),
                    auth.address
                ),
            ));
        }
        Ok(Payer {
            address: auth.address,
            request_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(payer: u8, nonce: u8, timestamp_ms: u64) -> (Address, RequestAuth) {
        let address = Address([payer; 20]);
        let auth = RequestAuth {
            address,
            timestamp_ms,
            nonce: [nonce; 16],
            signature: [0; 65],
        };
        (address, auth)
    }

    #[test]
    fn a_nonce_is_refused_the_second_time_until_it_expires_and_a_full_memory_is_busy() {
        let mut memory = ReplayMemory::new(Duration::from_secs(60));
        memory.limit = 3;
        let now = now_ms();
        let (a, expired) = request(1, 2, now - 61_000);
        assert!(memory.first_time(a, &expired).unwrap());
        let (_, first) = request(1, 1, now);
        assert!(memory.first_time(a, &first).unwrap());
        assert!(!memory.first_time(a, &first).unwrap(), "a replay");
        // Another payer's same nonce: new.
        let (b, same_nonce) = request(2, 1, now);
        assert!(memory.first_time(b, &same_nonce).unwrap());
        // Full: a new nonce is refused as busy, a replay still as a replay.
        let (_, fourth) = request(1, 3, now);
        let busy = memory.first_time(a, &fourth).unwrap_err();
        assert!(busy.to_string().contains("retry shortly"), "{busy}");
        assert!(!memory.first_time(a, &first).unwrap());
        // The expired one (the oldest) is forgotten: it would be refused as
        // stale anyway, and its room is free.
        memory.forget_expired();
        assert!(memory.first_time(a, &fourth).unwrap());
        assert!(!memory.first_time(a, &first).unwrap());
        assert!(!memory.first_time(b, &same_nonce).unwrap());
    }
}
