//! Whether a per-payer fixed-base table would make the node's signature
//! check cheaper (issue 10): the node verifies each signed request with
//! libsecp256k1's `verify_ecdsa` and the payer's cached public key
//! (`src/node/traffic/recover.rs`, `KeyCache::check`). A payer's key never
//! changes, so the multiples of it that verification needs could be computed
//! once: `x(u1·G + u2·Q) mod n == r` (u1 = z/s, u2 = r/s) with a signed
//! window of 8 bits over both scalars, 33 windows of the points
//! `1..=128 · 2^(8i) · P` in affine form (~370 KB a key), is at most 2 × 33
//! mixed additions and no doublings, against libsecp256k1's ~128 doublings
//! and ~70 additions. The group and field arithmetic below is k256's; only
//! the tables and the windowing are this file's.
//!
//! `verify_cached_key`: 64 signatures of one key over different digests,
//! verified by libsecp256k1 with the key parsed once, by the table, and by
//! k256's own `verify_prehash`; `verify_parts`: what the table's verification
//! is made of. Times are the bench thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), which other load on the machine blurs less
//! than the wall clock. Before timing, the table's verdict is checked
//! against libsecp256k1's on 32 signatures of 4 keys, on every one-bit
//! change of them and of their digests, and on their high-s twins.
//!
//! `batch_verify`: the node's batch check (`src/node/traffic/batch.rs`) of
//! one payer's signatures in batches of 1 to 64 vs libsecp256k1's recovery
//! of each (what the node does for a lone request), per signature, thread
//! CPU time; `batch_parts`: decompressing R, and building a payer's tables.
//! Before timing, the batch check's verdict is checked against libsecp256k1's
//! recovery on 64 signatures of 4 keys, every one-bit change of them and of
//! their digests, every spelling of v, high-s twins, another payer's key,
//! and 400 batches of up to 64 mixing payers and good and bad members.
//!
//!   cargo bench --bench signature
//!   python3 benches/ratios.py

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::elliptic_curve::BatchNormalize;
use k256::elliptic_curve::PrimeField;
use k256::elliptic_curve::group::Group;
use k256::elliptic_curve::ops::{Invert, Reduce};
use k256::elliptic_curve::point::AffineCoordinates;
use k256::elliptic_curve::point::DecompressPoint;
use k256::elliptic_curve::scalar::IsHigh;
use k256::elliptic_curve::subtle::Choice;
use k256::{AffinePoint, ProjectivePoint, Scalar, U256};
use rand::Rng;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
use secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use stratosdb::node::traffic::{batch, recover};

/// Bits of a scalar per window.
const WINDOW: usize = 8;
/// Points a window holds: signed digits in -127..=128 need `1..=128 · base`.
const ENTRIES: usize = 1 << (WINDOW - 1);
/// 32 windows of 8 bits and one for the last digit's carry.
const WINDOWS: usize = 256 / WINDOW + 1;

/// The multiples of one point a verification adds up: `table[i][j]` is
/// `(j + 1) · 2^(8i) · P`. About 370 KB.
struct FixedBase {
    windows: Box<[[AffinePoint; ENTRIES]]>,
}

impl FixedBase {
    /// The table of `point` (4,224 additions and 33 batched inversions).
    fn new(point: &ProjectivePoint) -> Self {
        let mut windows = Vec::with_capacity(WINDOWS);
        let mut base = point.to_affine();
        for _ in 0..WINDOWS {
            let mut multiples = [ProjectivePoint::IDENTITY; ENTRIES];
            let mut sum = ProjectivePoint::IDENTITY;
            for multiple in multiples.iter_mut() {
                sum += &base;
                *multiple = sum;
            }
            // 128 · base doubled: the next window's base, 256 · base.
            base = multiples[ENTRIES - 1].double().to_affine();
            windows.push(ProjectivePoint::batch_normalize(&multiples));
        }
        FixedBase {
            windows: windows.into_boxed_slice(),
        }
    }

    /// The table of the generator, built once.
    fn generator() -> &'static FixedBase {
        static GENERATOR: OnceLock<FixedBase> = OnceLock::new();
        GENERATOR.get_or_init(|| FixedBase::new(&ProjectivePoint::GENERATOR))
    }

    /// `sum + k · P`.
    fn add_multiple(&self, k: &Scalar, sum: &mut ProjectivePoint) {
        let bytes = k.to_bytes();
        let mut carry = 0i16;
        for (window, multiples) in self.windows.iter().enumerate() {
            let byte = if window < 32 { bytes[31 - window] } else { 0 };
            // Signed digit in -127..=128; what it lends is carried on.
            let mut digit = i16::from(byte) + carry;
            carry = 0;
            if digit > ENTRIES as i16 {
                digit -= 1 << WINDOW;
                carry = 1;
            }
            match digit {
                0 => {}
                1.. => *sum += &multiples[digit as usize - 1],
                _ => *sum -= &multiples[(-digit) as usize - 1],
            }
        }
    }

    /// Whether the 64-byte signature `r ‖ s` over `prehash` is valid for
    /// this table's point: ECDSA verification, with the same answers as
    /// libsecp256k1's `verify_ecdsa` (r and s in 1..n, s in the lower half).
    fn verify(&self, prehash: &[u8; 32], signature: &[u8; 64]) -> bool {
        let (Some(r), Some(s)) = (scalar(&signature[..32]), scalar(&signature[32..])) else {
            return false;
        };
        if bool::from(s.is_high()) {
            return false;
        }
        let Some(s_inverse) = Option::<Scalar>::from(s.invert_vartime()) else {
            return false;
        };
        let z = <Scalar as Reduce<U256>>::reduce_bytes(prehash.into());
        let mut sum = ProjectivePoint::IDENTITY;
        FixedBase::generator().add_multiple(&(z * s_inverse), &mut sum);
        self.add_multiple(&(r * s_inverse), &mut sum);
        if bool::from(sum.is_identity()) {
            return false;
        }
        // x < p < 2n, so reducing it mod n is the libsecp256k1 check of
        // both x == r and x == r + n.
        <Scalar as Reduce<U256>>::reduce_bytes(&sum.to_affine().x()) == r
    }
}

/// A nonzero scalar below n from 32 big-endian bytes.
fn scalar(bytes: &[u8]) -> Option<Scalar> {
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    let scalar = Option::<Scalar>::from(Scalar::from_repr(bytes.into()))?;
    (!bool::from(scalar.is_zero())).then_some(scalar)
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The CPU time of `iters` runs of `f`.
fn cpu_time(iters: u64, mut f: impl FnMut()) -> Duration {
    let before = thread_cpu();
    for _ in 0..iters {
        f();
    }
    thread_cpu() - before
}

const SIGNATURES: usize = 64;

/// The table's verdict is libsecp256k1's, for 4 keys and 8 digests each:
/// on the signature, on every one-bit change of it, on one-bit changes of
/// the digest and on the signature's high-s twin.
fn agrees_with_libsecp256k1(context: &Secp256k1<secp256k1::VerifyOnly>) {
    let secp = Secp256k1::new();
    for seed in 1..=4u8 {
        let secret = SecretKey::from_byte_array([seed; 32]).unwrap();
        let key = PublicKey::from_secret_key(&secp, &secret);
        let k256_key = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.serialize()).unwrap();
        let table = FixedBase::new(&ProjectivePoint::from(*k256_key.as_affine()));
        let libsecp = |digest: &[u8; 32], signature: &[u8; 64]| {
            Signature::from_compact(signature).is_ok_and(|signature| {
                context
                    .verify_ecdsa(Message::from_digest(*digest), &signature, &key)
                    .is_ok()
            })
        };
        for i in 0..8u8 {
            let digest: [u8; 32] = std::array::from_fn(|j| seed ^ i.wrapping_mul(37) ^ j as u8);
            let signature = secp
                .sign_ecdsa(Message::from_digest(digest), &secret)
                .serialize_compact();
            assert!(table.verify(&digest, &signature));
            for bit in 0..64 * 8 {
                let mut changed = signature;
                changed[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(table.verify(&digest, &changed), libsecp(&digest, &changed));
            }
            for bit in 0..32 * 8 {
                let mut other = digest;
                other[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    table.verify(&other, &signature),
                    libsecp(&other, &signature)
                );
            }
            let low = scalar(&signature[32..]).unwrap();
            let mut high = signature;
            high[32..].copy_from_slice(&(-low).to_bytes());
            assert!(!table.verify(&digest, &high));
            assert!(!libsecp(&digest, &high));
        }
    }
}

fn verify(c: &mut Criterion) {
    let secp = Secp256k1::new();
    let secret = SecretKey::from_byte_array([7; 32]).unwrap();
    let key = PublicKey::from_secret_key(&secp, &secret);
    let signed: Vec<([u8; 32], Signature)> = (0..SIGNATURES)
        .map(|i| {
            let digest: [u8; 32] = std::array::from_fn(|j| (i * 31 + j * 7 + 1) as u8);
            (
                digest,
                secp.sign_ecdsa(Message::from_digest(digest), &secret),
            )
        })
        .collect();
    let compact: Vec<([u8; 32], [u8; 64])> = signed
        .iter()
        .map(|(digest, signature)| (*digest, signature.serialize_compact()))
        .collect();
    let k256_key = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.serialize()).unwrap();
    let table = FixedBase::new(&ProjectivePoint::from(*k256_key.as_affine()));
    FixedBase::generator();
    let context = Secp256k1::verification_only();
    // The same verdicts as libsecp256k1, or the figures mean nothing.
    agrees_with_libsecp256k1(&context);

    let mut group = c.benchmark_group("verify_cached_key");
    group.throughput(Throughput::Elements(SIGNATURES as u64));
    group.bench_function("libsecp256k1", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for (digest, signature) in &signed {
                    let verdict =
                        context.verify_ecdsa(Message::from_digest(*digest), signature, &key);
                    assert!(black_box(verdict).is_ok());
                }
            })
        })
    });
    group.bench_function("fixed_base", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for (digest, signature) in &compact {
                    assert!(black_box(table.verify(digest, signature)));
                }
            })
        })
    });
    let k256_signatures: Vec<k256::ecdsa::Signature> = compact
        .iter()
        .map(|(_, signature)| k256::ecdsa::Signature::from_slice(signature).unwrap())
        .collect();
    group.bench_function("k256", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for ((digest, _), signature) in compact.iter().zip(&k256_signatures) {
                    assert!(black_box(k256_key.verify_prehash(digest, signature)).is_ok());
                }
            })
        })
    });
    group.finish();

    // What one table verification is made of, 64 times over.
    let mut group = c.benchmark_group("verify_parts");
    group.throughput(Throughput::Elements(SIGNATURES as u64));
    let s = scalar(&compact[0].1[32..]).unwrap();
    let point = ProjectivePoint::GENERATOR * s;
    let affine = point.to_affine();
    group.bench_function("scalar_invert_vartime", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for _ in 0..SIGNATURES {
                    black_box(black_box(s).invert_vartime());
                }
            })
        })
    });
    group.bench_function("to_affine", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for _ in 0..SIGNATURES {
                    black_box(black_box(point).to_affine());
                }
            })
        })
    });
    group.bench_function("66_mixed_additions", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for _ in 0..SIGNATURES {
                    let mut sum = black_box(point);
                    for _ in 0..66 {
                        sum += black_box(&affine);
                    }
                    black_box(sum);
                }
            })
        })
    });
    group.finish();
}

/// A digest and its 65-byte recoverable signature `r ‖ s ‖ v`.
type SignedDigest = ([u8; 32], [u8; 65]);

/// Signatures (v 27 or 28) of `count` digests by the key `[seed; 32]`, with
/// the key's SEC1 form.
fn recoverable(seed: u8, count: usize) -> (Vec<u8>, Vec<SignedDigest>) {
    let secp = Secp256k1::new();
    let secret = SecretKey::from_byte_array([seed; 32]).unwrap();
    let key = PublicKey::from_secret_key(&secp, &secret);
    let signed = (0..count)
        .map(|i| {
            let digest: [u8; 32] =
                std::array::from_fn(|j| (i * 31 + j * 7 + usize::from(seed)) as u8);
            let (id, compact) = secp
                .sign_ecdsa_recoverable(Message::from_digest(digest), &secret)
                .serialize_compact();
            let mut signature = [0u8; 65];
            signature[..64].copy_from_slice(&compact);
            signature[64] = 27 + i32::from(id) as u8;
            (digest, signature)
        })
        .collect();
    (key.serialize().to_vec(), signed)
}

/// What the node decides today for a known payer: libsecp256k1 recovers
/// the key with the signature's v (`recover.rs`), and it must be the payer's.
fn recovers_to(digest: &[u8; 32], signature: &[u8; 65], key: &[u8]) -> bool {
    let key = PublicKey::from_slice(key).unwrap();
    let address = {
        let digest = stratosdb_verifier::traffic::keccak256(&key.serialize_uncompressed()[1..]);
        let mut address = [0u8; 20];
        address.copy_from_slice(&digest[12..]);
        stratosdb_verifier::traffic::Address(address)
    };
    recover::recover(digest, signature).is_ok_and(|recovered| recovered == address)
}

/// The batch check's verdict is libsecp256k1's recovery's, for 4 keys and
/// 16 signatures each: alone, on every one-bit change of the signature and
/// of the digest, on each other spelling of v, on the high-s twin, against
/// another payer's key; and on batches of up to 64 mixing keys and good and
/// bad members (true exactly when every member is good).
fn batch_agrees_with_libsecp256k1() {
    let mut payers = Vec::new();
    for seed in 1..=4u8 {
        let (key, signed) = recoverable(seed, 16);
        payers.push((batch::PayerKey::from_sec1(&key).unwrap(), key, signed));
    }
    let one = |key: &batch::PayerKey, digest: &[u8; 32], signature: &[u8; 65]| {
        batch::verify(&[batch::Signed {
            key,
            prehash: digest,
            signature,
        }])
    };
    let mut bad = Vec::new();
    for (index, (key, sec1, signed)) in payers.iter().enumerate() {
        let (other_key, _, _) = &payers[(index + 1) % payers.len()];
        for (digest, signature) in signed {
            assert!(one(key, digest, signature));
            assert!(recovers_to(digest, signature, sec1));
            assert!(!one(other_key, digest, signature), "another payer's key");
            for bit in 0..65 * 8 {
                let mut changed = *signature;
                changed[bit / 8] ^= 1 << (bit % 8);
                let verdict = one(key, digest, &changed);
                assert_eq!(verdict, recovers_to(digest, &changed, sec1), "bit {bit}");
                if !verdict {
                    bad.push((index, *digest, changed));
                }
            }
            for bit in 0..32 * 8 {
                let mut other = *digest;
                other[bit / 8] ^= 1 << (bit % 8);
                let verdict = one(key, &other, signature);
                assert_eq!(
                    verdict,
                    recovers_to(&other, signature, sec1),
                    "digest bit {bit}"
                );
                if !verdict {
                    bad.push((index, other, *signature));
                }
            }
            for v in [0u8, 1, 27, 28, 2, 29, 255] {
                let mut changed = *signature;
                changed[64] = v;
                let same = (v == signature[64]) || (v + 27 == signature[64]);
                assert_eq!(one(key, digest, &changed), same, "v {v}");
                assert_eq!(recovers_to(digest, &changed, sec1), same, "v {v}");
            }
            let low = scalar(&signature[32..64]).unwrap();
            let mut high = *signature;
            high[32..64].copy_from_slice(&(-low).to_bytes());
            assert!(!one(key, digest, &high));
            assert!(!recovers_to(digest, &high, sec1));
            // The twin with its v flipped recovers the same key in plain
            // ECDSA terms; libsecp256k1's check refuses it as high-s.
            high[64] ^= 1;
            assert!(!one(key, digest, &high));
            assert!(!recovers_to(digest, &high, sec1));
        }
    }
    // Mixed batches: good members of every payer, and now and then a bad one.
    let mut rng = rand::rng();
    for round in 0..400 {
        let size = 1 + round % 64;
        let mut members: Vec<(usize, [u8; 32], [u8; 65])> = Vec::new();
        let mut bad_members = 0;
        for _ in 0..size {
            if round % 2 == 1 && rng.random_range(0..8) == 0 {
                members.push(bad[rng.random_range(0..bad.len())]);
                bad_members += 1;
            } else {
                let payer = rng.random_range(0..payers.len());
                let (digest, signature) = payers[payer].2[rng.random_range(0..16)];
                members.push((payer, digest, signature));
            }
        }
        let batch: Vec<batch::Signed> = members
            .iter()
            .map(|(payer, digest, signature)| batch::Signed {
                key: &payers[*payer].0,
                prehash: digest,
                signature,
            })
            .collect();
        assert_eq!(batch::verify(&batch), bad_members == 0, "round {round}");
    }
}

/// Per signature: libsecp256k1's recovery (what the node does today for
/// each signed request) vs the batch check of one payer's signatures in
/// batches of 1, 4, 16 and 64 (64 signatures an iteration either way).
fn batch_verify(c: &mut Criterion) {
    batch_agrees_with_libsecp256k1();
    let (key, signed) = recoverable(9, SIGNATURES);
    let payer = batch::PayerKey::from_sec1(&key).unwrap();
    let public = PublicKey::from_slice(&key).unwrap();
    let context = Secp256k1::verification_only();
    let mut group = c.benchmark_group("batch_verify");
    group.throughput(Throughput::Elements(SIGNATURES as u64));
    group.bench_function("libsecp256k1_recover", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for (digest, signature) in &signed {
                    let id = RecoveryId::try_from(i32::from(signature[64] - 27)).unwrap();
                    let recoverable = RecoverableSignature::from_compact(&signature[..64], id);
                    let recovered =
                        context.recover_ecdsa(Message::from_digest(*digest), &recoverable.unwrap());
                    assert!(black_box(recovered).is_ok_and(|recovered| recovered == public));
                }
            })
        })
    });
    let batch: Vec<batch::Signed> = signed
        .iter()
        .map(|(digest, signature)| batch::Signed {
            key: &payer,
            prehash: digest,
            signature,
        })
        .collect();
    for size in [1, 2, 4, 8, 16, 64] {
        group.bench_function(format!("batch_{size}"), |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    for chunk in batch.chunks(size) {
                        assert!(black_box(batch::verify(chunk)));
                    }
                })
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("batch_parts");
    group.throughput(Throughput::Elements(SIGNATURES as u64));
    group.bench_function("decompress_r", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for (_, signature) in &signed {
                    let x: [u8; 32] = signature[..32].try_into().unwrap();
                    let point =
                        AffinePoint::decompress(&x.into(), Choice::from(signature[64] - 27));
                    assert!(bool::from(black_box(point).is_some()));
                }
            })
        })
    });
    group.bench_function("payer_key_tables", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                for _ in 0..SIGNATURES {
                    black_box(batch::PayerKey::from_sec1(black_box(&key)));
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, verify, batch_verify);
criterion_main!(benches);
