//! Batch verification of signed requests whose payers' public keys are
//! known (issue 10, `docs/traffic.md`). A request's 65-byte signature
//! `r ‖ s ‖ v` fixes its nonce point R: x = r, y's parity = v (only v in
//! 27, 28, 0, 1, so never x = r + n). libsecp256k1's recovery with that v
//! gives the key `r⁻¹(s·R − z·G)`, so "the signature recovers to Q" is
//! `s·R = z·G + r·Q`. For random 128-bit `c_i`, one multi-scalar
//! multiplication checks a whole batch:
//!
//! `Σ c_i·R_i − (Σ c_i·z_i/s_i)·G − Σ_payers (Σ c_i·r_i/s_i)·Q = 0`
//!
//! which holds for every batch of valid signatures and, for a batch with
//! any invalid one, only with probability about 2⁻¹²⁷ over the `c_i`. A
//! failed batch says only that some member is bad: the caller then checks
//! them one by one. The group and field arithmetic is k256's; the
//! multiplication is Strauss's (all points share the doublings) over
//! width-w NAF digits, variable time (signatures and keys are public).
//! Scalars of 256 bits are split as `lo + 2¹²⁸·hi` against the points P and
//! `2¹²⁸·P`, kept per payer, so every scalar has 128 bits and a batch takes
//! 129 doublings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use k256::elliptic_curve::BatchNormalize;
use k256::elliptic_curve::PrimeField;
use k256::elliptic_curve::group::Group;
use k256::elliptic_curve::ops::{Invert, Reduce};
use k256::elliptic_curve::point::DecompressPoint;
use k256::elliptic_curve::scalar::IsHigh;
use k256::elliptic_curve::subtle::Choice;
use k256::{AffinePoint, ProjectivePoint, Scalar, U256};
use parking_lot::RwLock;
use rand::Rng;
use stratosdb_verifier::VerifyError;
use stratosdb_verifier::traffic::Address;
use tokio::sync::oneshot;

use super::gather::Gather;
use super::recover::KeyCache;

/// NAF width of the generator's tables (static, 64 points each).
const G_WIDTH: u32 = 8;
/// NAF width of a payer's key tables (8 points each, ~1.4 KB a payer).
const KEY_WIDTH: u32 = 5;
/// NAF width of a signature's R (a table of 8 built per batch).
const R_WIDTH: u32 = 5;
/// Digits of a 128-bit number in width-w NAF: up to 128 + w positions.
const DIGITS: usize = 128 + 8;

/// The odd multiples `P, 3P, ..., (2^(w-1) - 1)P` a width-w NAF adds.
fn odd_multiples(point: &ProjectivePoint, width: u32) -> Vec<ProjectivePoint> {
    let count = 1usize << (width - 2);
    let twice = point.double();
    let mut multiples = Vec::with_capacity(count);
    multiples.push(*point);
    for i in 1..count {
        let next = multiples[i - 1] + twice;
        multiples.push(next);
    }
    multiples
}

/// 2^128 · point.
fn times_2_128(point: &ProjectivePoint) -> ProjectivePoint {
    let mut shifted = *point;
    for _ in 0..128 {
        shifted = shifted.double();
    }
    shifted
}

/// The odd multiples of P and of 2^128·P in affine form.
struct SplitTables {
    low: Vec<AffinePoint>,
    high: Vec<AffinePoint>,
}

impl SplitTables {
    fn new(point: &ProjectivePoint, width: u32) -> SplitTables {
        let low = odd_multiples(point, width);
        let high = odd_multiples(&times_2_128(point), width);
        SplitTables {
            low: ProjectivePoint::batch_normalize(low.as_slice()),
            high: ProjectivePoint::batch_normalize(high.as_slice()),
        }
    }
}

fn generator() -> &'static SplitTables {
    static GENERATOR: OnceLock<SplitTables> = OnceLock::new();
    GENERATOR.get_or_init(|| SplitTables::new(&ProjectivePoint::GENERATOR, G_WIDTH))
}

/// A payer's public key, ready for batches: the multiples of Q and of
/// 2^128·Q that the check adds (~1.4 KB; ~45 us to build).
pub struct PayerKey {
    tables: SplitTables,
}

impl PayerKey {
    /// The tables of a key in SEC1 form (33 or 65 bytes); None if it is not
    /// a point of the curve.
    pub fn from_sec1(bytes: &[u8]) -> Option<PayerKey> {
        let key = k256::PublicKey::from_sec1_bytes(bytes).ok()?;
        Some(PayerKey {
            tables: SplitTables::new(&key.to_projective(), KEY_WIDTH),
        })
    }
}

/// One signed request of a batch: the signature `r ‖ s ‖ v` over
/// `prehash`, claimed by the payer whose key is `key`.
pub struct Signed<'a> {
    pub key: &'a PayerKey,
    pub prehash: &'a [u8; 32],
    pub signature: &'a [u8; 65],
}

/// Width-w NAF digits of a 128-bit number, least significant first: each
/// nonzero digit odd, in `-(2^(w-1) - 1)..=2^(w-1) - 1`.
fn naf(k: u128, width: u32) -> [i8; DIGITS] {
    let mut digits = [0i8; DIGITS];
    let mask = (1u128 << width) - 1;
    let half = 1i32 << (width - 1);
    let mut carry = 0i32;
    let mut position = 0usize;
    while position < 128 {
        let bit = ((k >> position) & 1) as i32;
        if bit == carry {
            // bit + carry is 0 or 2: a zero digit, the carry goes on.
            position += 1;
            continue;
        }
        let window = ((k >> position) & mask) as i32 + carry;
        if window < half {
            digits[position] = window as i8;
            carry = 0;
        } else {
            digits[position] = (window - (half << 1)) as i8;
            carry = 1;
        }
        position += width as usize;
    }
    if carry == 1 {
        digits[position] = 1;
    }
    digits
}

/// A nonzero scalar below n from 32 big-endian bytes.
fn scalar(bytes: &[u8]) -> Option<Scalar> {
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    let scalar = Option::<Scalar>::from(Scalar::from_repr(bytes.into()))?;
    (!bool::from(scalar.is_zero())).then_some(scalar)
}

/// The scalar's low and high 128 bits.
fn halves(k: &Scalar) -> (u128, u128) {
    let bytes = k.to_bytes();
    let mut high = [0u8; 16];
    let mut low = [0u8; 16];
    high.copy_from_slice(&bytes[..16]);
    low.copy_from_slice(&bytes[16..]);
    (u128::from_be_bytes(low), u128::from_be_bytes(high))
}

/// Adds `digit · P` from a table of P's odd multiples.
fn add_digit<T>(sum: &mut ProjectivePoint, digit: i8, table: &[T])
where
    ProjectivePoint: std::ops::AddAssign<T> + std::ops::SubAssign<T>,
    T: Copy,
{
    match digit {
        0 => {}
        1.. => *sum += table[(digit as usize - 1) / 2],
        _ => *sum -= table[((-digit) as usize - 1) / 2],
    }
}

/// Whether every signature of `batch` recovers to its claimed key, as
/// libsecp256k1's recovery with its v would say (r and s in 1..n, s in the
/// lower half, v one of 27, 28, 0, 1). False when any one does not (up to
/// a 2⁻¹²⁷ chance of true), which does not say which: check them one by one.
pub fn verify(batch: &[Signed<'_>]) -> bool {
    if batch.is_empty() {
        return true;
    }
    // Each signature's r, s, z and R.
    let mut parsed = Vec::with_capacity(batch.len());
    for signed in batch {
        let parity = match signed.signature[64] {
            27 | 28 => signed.signature[64] - 27,
            0 | 1 => signed.signature[64],
            _ => return false,
        };
        let (Some(r), Some(s)) = (
            scalar(&signed.signature[..32]),
            scalar(&signed.signature[32..64]),
        ) else {
            return false;
        };
        if bool::from(s.is_high()) {
            return false;
        }
        // r < n < p, so r is a field element: R = (r, y of that parity).
        let r_x: [u8; 32] = r.to_bytes().into();
        let Some(point) =
            Option::<AffinePoint>::from(AffinePoint::decompress(&r_x.into(), Choice::from(parity)))
        else {
            return false;
        };
        let z = <Scalar as Reduce<U256>>::reduce_bytes(signed.prehash.into());
        parsed.push((r, s, z, point));
    }
    // All the s⁻¹ with one inversion (Montgomery's trick).
    let mut products = Vec::with_capacity(parsed.len());
    let mut product = Scalar::ONE;
    for (_, s, _, _) in &parsed {
        product *= s;
        products.push(product);
    }
    let Some(mut inverse) = Option::<Scalar>::from(product.invert_vartime()) else {
        return false;
    };
    let mut s_inverses = vec![Scalar::ZERO; parsed.len()];
    for i in (0..parsed.len()).rev() {
        s_inverses[i] = if i == 0 {
            inverse
        } else {
            inverse * products[i - 1]
        };
        inverse *= parsed[i].1;
    }

    // The scalars: c_i for each R_i, −Σ c_i z_i/s_i for G, and −Σ c_i r_i/s_i
    // for each payer's key.
    let mut rng = rand::rng();
    let mut g_scalar = Scalar::ZERO;
    let mut keys: Vec<(&PayerKey, Scalar)> = Vec::new();
    let mut r_digits = Vec::with_capacity(parsed.len());
    let mut r_tables = Vec::with_capacity(parsed.len());
    for ((signed, (r, _, z, point)), s_inverse) in batch.iter().zip(&parsed).zip(&s_inverses) {
        // Odd, so never 0: 127 random bits.
        let c: u128 = rng.random::<u128>() | 1;
        let c_scalar = Scalar::from(c);
        let weight = c_scalar * s_inverse;
        g_scalar -= weight * z;
        let key_weight = weight * r;
        match keys
            .iter_mut()
            .find(|(key, _)| std::ptr::eq(*key, signed.key))
        {
            Some((_, sum)) => *sum -= key_weight,
            None => keys.push((signed.key, -key_weight)),
        }
        r_digits.push(naf(c, R_WIDTH));
        r_tables.push(odd_multiples(&ProjectivePoint::from(*point), R_WIDTH));
    }
    let mut fixed: Vec<([i8; DIGITS], &[AffinePoint])> = Vec::with_capacity(2 + 2 * keys.len());
    let generator = generator();
    let (low, high) = halves(&g_scalar);
    fixed.push((naf(low, G_WIDTH), &generator.low));
    fixed.push((naf(high, G_WIDTH), &generator.high));
    for (key, sum) in &keys {
        let (low, high) = halves(sum);
        fixed.push((naf(low, KEY_WIDTH), &key.tables.low));
        fixed.push((naf(high, KEY_WIDTH), &key.tables.high));
    }

    // Strauss: one pass of shared doublings from the top digit down.
    let top = r_digits
        .iter()
        .chain(fixed.iter().map(|(digits, _)| digits))
        .filter_map(|digits| digits.iter().rposition(|&d| d != 0))
        .max();
    let mut sum = ProjectivePoint::IDENTITY;
    if let Some(top) = top {
        for position in (0..=top).rev() {
            sum = sum.double();
            for (digits, table) in r_digits.iter().zip(&r_tables) {
                add_digit(&mut sum, digits[position], table);
            }
            for (digits, table) in &fixed {
                add_digit(&mut sum, digits[position], table);
            }
        }
    }
    bool::from(sum.is_identity())
}

/// Fewest signatures of known payers checked as one batch: below it
/// libsecp256k1's recovery, one by one, is cheaper (`BENCHMARKS.md`).
pub const MIN_BATCH: usize = 3;
/// Most signatures in one multiplication.
pub const MAX_BATCH: usize = 64;
/// Most payers' batch tables kept (~1.4 KB each); past it they start over.
const MAX_TABLES: usize = 10_000;

type Reply = oneshot::Sender<Result<Address, VerifyError>>;

/// A signature waiting for its check.
struct Job {
    claimed: Address,
    prehash: [u8; 32],
    signature: [u8; 65],
    reply: Reply,
}

/// The node's signature checks, batched across concurrent requests
/// ([`Gather`]): a lone request is checked at once, by itself; concurrent
/// ones together.
/// Signatures of payers whose key is known go through [`verify`] when there
/// are at least [`MIN_BATCH`] of them; a batch that fails, and every other
/// signature, is checked one by one by [`KeyCache::check`] (recovery, which
/// learns a payer's key), so the answers and refusals are the same.
#[derive(Default)]
pub struct SignatureChecker {
    keys: KeyCache,
    tables: RwLock<HashMap<Address, Arc<PayerKey>>>,
    queue: Gather<Job>,
    /// Batches that passed, and the signatures in them.
    batches: AtomicU64,
    batched: AtomicU64,
}

impl SignatureChecker {
    /// The address whose key made `signature` over `prehash`, as
    /// [`KeyCache::check`] answers.
    pub async fn check(
        &self,
        claimed: &Address,
        prehash: &[u8; 32],
        signature: &[u8; 65],
    ) -> Result<Address, VerifyError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            claimed: *claimed,
            prehash: *prehash,
            signature: *signature,
            reply,
        };
        self.queue.submit(job, |jobs| self.check_all(jobs)).await;
        answer.await.unwrap_or_else(|_| {
            Err(VerifyError::BadRequestSignature(
                "the node's signature check failed; retry".into(),
            ))
        })
    }

    /// Batches that passed so far, and the signatures they held.
    pub fn batched(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.batched.load(Ordering::Relaxed),
        )
    }

    fn check_all(&self, jobs: Vec<Job>) {
        let mut known = Vec::with_capacity(jobs.len());
        let mut alone = Vec::new();
        for job in jobs {
            match self.payer_key(&job.claimed) {
                Some(key) => known.push((key, job)),
                None => alone.push(job),
            }
        }
        if known.len() < MIN_BATCH {
            alone.extend(known.into_iter().map(|(_, job)| job));
            known = Vec::new();
        }
        for chunk in chunks(known, MAX_BATCH) {
            let batch: Vec<Signed> = chunk
                .iter()
                .map(|(key, job)| Signed {
                    key,
                    prehash: &job.prehash,
                    signature: &job.signature,
                })
                .collect();
            if verify(&batch) {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.batched
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                for (_, job) in chunk {
                    let _ = job.reply.send(Ok(job.claimed));
                }
            } else {
                alone.extend(chunk.into_iter().map(|(_, job)| job));
            }
        }
        for job in alone {
            let answer = self.keys.check(&job.claimed, &job.prehash, &job.signature);
            // The request may have gone away meanwhile.
            let _ = job.reply.send(answer);
        }
    }

    /// The batch tables of a payer whose key is known; built the first time.
    fn payer_key(&self, address: &Address) -> Option<Arc<PayerKey>> {
        if let Some(key) = self.tables.read().get(address) {
            return Some(key.clone());
        }
        let public = self.keys.known(address)?;
        let key = Arc::new(PayerKey::from_sec1(&public.serialize())?);
        let mut tables = self.tables.write();
        if tables.len() >= MAX_TABLES {
            tables.clear();
        }
        tables.insert(*address, key.clone());
        Some(key)
    }
}

/// `items` in runs of at most `size`, each about the same length.
fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let count = items.len().div_ceil(size);
    let mut runs: Vec<Vec<T>> = (0..count).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        runs[i % count].push(item);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratosdb_verifier::traffic::{RequestSigner, eip191_hash};

    /// Signed requests of `payers` keys, 6 each: (claimed, prehash, signature).
    fn requests(payers: u8) -> Vec<(Address, [u8; 32], [u8; 65])> {
        let mut requests = Vec::new();
        for seed in 1..=payers {
            let signer = RequestSigner::from_bytes(&[seed; 32]).unwrap();
            for i in 0..6 {
                let message = format!("request {seed} {i}");
                let signature = signer.sign_message(message.as_bytes());
                requests.push((signer.address(), eip191_hash(message.as_bytes()), signature));
            }
        }
        requests
    }

    /// Bad members of a request set: a flipped bit of the signature, of the
    /// digest, v flipped, the high-s twin, another payer's signature
    /// claimed, an unknown v.
    fn spoil(requests: &mut [(Address, [u8; 32], [u8; 65])], which: usize, how: usize) {
        let other = requests[(which + 7) % requests.len()];
        let (claimed, prehash, signature) = &mut requests[which];
        match how % 6 {
            0 => signature[(which * 13) % 64] ^= 1 << (which % 8),
            1 => prehash[which % 32] ^= 0x80,
            2 => signature[64] ^= 1,
            3 => {
                let s = scalar(&signature[32..64]).unwrap();
                signature[32..64].copy_from_slice(&(-s).to_bytes());
                signature[64] ^= 1;
            }
            4 => {
                assert_ne!(other.0, *claimed);
                *signature = other.2;
                *prehash = other.1;
            }
            _ => signature[64] = 29,
        }
    }

    /// A checker that knows the keys of `requests`' payers, and a plain
    /// cache that knows them too (the answers to compare with).
    fn checker_knowing(requests: &[(Address, [u8; 32], [u8; 65])]) -> (SignatureChecker, KeyCache) {
        let checker = SignatureChecker::default();
        let reference = KeyCache::default();
        for (claimed, prehash, signature) in requests {
            assert_eq!(
                checker.keys.check(claimed, prehash, signature).unwrap(),
                *claimed
            );
            assert_eq!(
                reference.check(claimed, prehash, signature).unwrap(),
                *claimed
            );
        }
        (checker, reference)
    }

    /// Batches with bad members: every request gets the answer the
    /// one-by-one check gives (the bad ones their refusal, the good ones
    /// their payer), and a batch of good ones passes as one.
    #[test]
    fn a_batch_with_bad_members_answers_each_as_the_one_by_one_check() {
        let good = requests(4);
        let (checker, reference) = checker_knowing(&good);
        for round in 0..12 {
            let mut requests = good.clone();
            // Round 0 all good; then 1, 2, ... bad members.
            for k in 0..round {
                let which = (k * 5 + round) % requests.len();
                spoil(&mut requests, which, k + round);
            }
            let (jobs, answers): (Vec<Job>, Vec<_>) = requests
                .iter()
                .map(|(claimed, prehash, signature)| {
                    let (reply, answer) = oneshot::channel();
                    let job = Job {
                        claimed: *claimed,
                        prehash: *prehash,
                        signature: *signature,
                        reply,
                    };
                    (job, answer)
                })
                .unzip();
            let before = checker.batched();
            checker.check_all(jobs);
            for ((claimed, prehash, signature), mut answer) in requests.iter().zip(answers) {
                let ours = answer.try_recv().expect("answered");
                let theirs = reference.check(claimed, prehash, signature);
                assert_eq!(
                    ours.as_ref().map_err(ToString::to_string),
                    theirs.as_ref().map_err(ToString::to_string),
                    "round {round}"
                );
            }
            let after = checker.batched();
            if round == 0 {
                assert_eq!(after, (before.0 + 1, before.1 + 24), "one batch of all 24");
            } else {
                assert_eq!(after, before, "round {round}: the batch failed, one by one");
            }
        }
    }

    /// Concurrent requests through `check` on a multi-threaded runtime,
    /// good and bad, of known and unknown payers: each gets its own answer.
    #[test]
    fn concurrent_checks_get_their_own_answers() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        let good = requests(6);
        // Payers 1-4 known, 5-6 learnt during the run.
        let (checker, reference) = checker_knowing(&good[..24]);
        let checker = Arc::new(checker);
        let mut all = Vec::new();
        for round in 0..8 {
            let mut requests = good.clone();
            if round % 2 == 1 {
                spoil(&mut requests, round * 3, round);
                spoil(&mut requests, round * 3 + 11, round + 1);
            }
            all.extend(requests);
        }
        let answers = runtime.block_on(async {
            let tasks: Vec<_> = all
                .iter()
                .map(|&(claimed, prehash, signature)| {
                    let checker = checker.clone();
                    tokio::spawn(async move { checker.check(&claimed, &prehash, &signature).await })
                })
                .collect();
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.unwrap());
            }
            answers
        });
        for ((claimed, prehash, signature), ours) in all.iter().zip(answers) {
            let theirs = reference.check(claimed, prehash, signature);
            assert_eq!(
                ours.map_err(|e| e.to_string()),
                theirs.map_err(|e| e.to_string())
            );
        }
    }

    /// The NAF digits add up to the number, for every width used.
    #[test]
    fn naf_digits_add_up() {
        let mut rng = rand::rng();
        let mut numbers = vec![0, 1, u128::MAX, u128::MAX - 1, 1 << 127, (1 << 127) - 1];
        numbers.extend((0..500).map(|_| rng.random::<u128>()));
        for width in [R_WIDTH, KEY_WIDTH, G_WIDTH] {
            for &k in &numbers {
                let digits = naf(k, width);
                let mut total = Scalar::ZERO;
                let mut power = Scalar::ONE;
                for &d in &digits {
                    if d != 0 {
                        assert!(d % 2 != 0 && i32::from(d).abs() < 1 << (width - 1));
                    }
                    let magnitude = Scalar::from(u64::from(d.unsigned_abs()));
                    total += if d < 0 { -magnitude } else { magnitude } * power;
                    power += power;
                }
                assert_eq!(total, Scalar::from(k), "{k} at width {width}");
            }
        }
    }
}
