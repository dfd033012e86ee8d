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

use std::sync::OnceLock;

use k256::elliptic_curve::BatchNormalize;
use k256::elliptic_curve::PrimeField;
use k256::elliptic_curve::group::Group;
use k256::elliptic_curve::ops::{Invert, Reduce};
use k256::elliptic_curve::point::DecompressPoint;
use k256::elliptic_curve::scalar::IsHigh;
use k256::elliptic_curve::subtle::Choice;
use k256::{AffinePoint, ProjectivePoint, Scalar, U256};
use rand::Rng;

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
        let Some(point) = Option::<AffinePoint>::from(AffinePoint::decompress(
            &r_x.into(),
            Choice::from(parity),
        )) else {
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

#[cfg(test)]
mod tests {
    use super::*;

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
