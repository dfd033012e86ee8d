//! Account addresses: 20 bytes, two spellings.

use std::fmt;
use std::str::FromStr;

use bech32::{Bech32, Hrp};
use k256::ecdsa::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keccak256;
use super::request::{hex_array, lower_hex};
use crate::VerifyError;

/// The human-readable part of an account's address on Stratos.
const STRATOS_HRP: &str = "st";

/// An account: the last 20 bytes of the Keccak-256 hash of its secp256k1
/// public key, as on Ethereum. The same bytes are the account's `st1…`
/// address on Stratos (bech32, prefix `st`), so one key pays on the chain and
/// signs requests to the database.
///
/// ```
/// use stratosdb_verifier::traffic::Address;
/// let a: Address = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".parse().unwrap();
/// assert_eq!(a.to_string(), "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
/// let st1 = a.to_stratos();
/// assert!(st1.starts_with("st1"));
/// assert_eq!(st1.parse::<Address>().unwrap(), a);
/// // A mixed-case address must carry a correct EIP-55 checksum.
/// assert!("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD".parse::<Address>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The address of a secp256k1 public key.
    pub fn from_public_key(key: &VerifyingKey) -> Address {
        let point = key.to_encoded_point(false);
        // Uncompressed: 0x04 ‖ x ‖ y; the address hashes x ‖ y.
        let hash = keccak256(&point.as_bytes()[1..]);
        let mut bytes = [0u8; 20];
        bytes.copy_from_slice(&hash[12..]);
        Address(bytes)
    }

    /// The `st1…` spelling (bech32 with prefix `st`).
    pub fn to_stratos(&self) -> String {
        let hrp = Hrp::parse_unchecked(STRATOS_HRP);
        // Encoding 20 bytes under a 2-letter prefix cannot exceed bech32's
        // length limit, the only way encoding fails.
        bech32::encode::<Bech32>(hrp, &self.0).unwrap_or_default()
    }

    /// The lowercase `0x…` spelling, without checksum.
    pub fn to_lower_hex(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }

    /// `0x` and the 40 digits of [`Address::eip55_digits`].
    fn eip55(&self) -> String {
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        // The digits are ASCII.
        out.push_str(std::str::from_utf8(&self.eip55_digits()).unwrap_or_default());
        out
    }

    /// The 40 hex digits with EIP-55's case: a letter is upper case where
    /// the nibble at its place in the keccak of the lowercase digits is 8 or
    /// more.
    fn eip55_digits(&self) -> [u8; 40] {
        let mut digits = [0u8; 40];
        lower_hex(&self.0, &mut digits);
        let hash = keccak256(&digits);
        for (i, digit) in digits.iter_mut().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if nibble >= 8 {
                digit.make_ascii_uppercase();
            }
        }
        digits
    }
}

/// EIP-55 checksummed `0x…`.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.eip55())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.eip55())
    }
}

/// `0x` and 40 hex digits (all lower, all upper, or EIP-55 mixed case with a
/// correct checksum), or `st1…`.
impl FromStr for Address {
    type Err = VerifyError;

    fn from_str(s: &str) -> Result<Address, VerifyError> {
        let bad = |why: &str| VerifyError::MalformedAddress(format!("{s:?}: {why}"));
        if s.starts_with("st1") {
            let (hrp, data) = bech32::decode(s).map_err(|e| bad(&e.to_string()))?;
            if hrp.as_str() != STRATOS_HRP {
                return Err(bad("prefix is not st"));
            }
            let bytes: [u8; 20] = data.try_into().map_err(|_| bad("does not hold 20 bytes"))?;
            return Ok(Address(bytes));
        }
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .ok_or_else(|| bad("expected 0x… or st1…"))?;
        if digits.len() != 40 {
            return Err(bad("expected 40 hex digits after 0x"));
        }
        let address = Address(hex_array(digits).ok_or_else(|| bad("not hex"))?);
        let mixed = digits.bytes().any(|c| c.is_ascii_lowercase())
            && digits.bytes().any(|c| c.is_ascii_uppercase());
        if mixed && address.eip55_digits() != digits.as_bytes() {
            return Err(bad("wrong EIP-55 checksum (check the letters' case)"));
        }
        Ok(address)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.eip55())
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_reference_vectors() {
        // From EIP-55 itself.
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(s.to_lowercase().parse::<Address>().unwrap(), a);
            assert_eq!(
                format!("0x{}", s[2..].to_uppercase())
                    .parse::<Address>()
                    .unwrap(),
                a
            );
            assert_eq!(a.to_lower_hex(), s.to_lowercase());
            // Any one letter's case changed: a wrong checksum, refused.
            for (i, c) in s.char_indices().skip(2) {
                if !c.is_ascii_alphabetic() {
                    continue;
                }
                let flipped = if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                };
                let changed = format!("{}{flipped}{}", &s[..i], &s[i + 1..]);
                let mixed = changed[2..].chars().any(|c| c.is_ascii_lowercase())
                    && changed[2..].chars().any(|c| c.is_ascii_uppercase());
                let err = changed.parse::<Address>();
                assert_eq!(err.is_err(), mixed, "{changed}");
            }
        }
    }

    #[test]
    fn address_of_a_known_key() {
        // The private key 0x…01's address is well known.
        let mut secret = [0u8; 32];
        secret[31] = 1;
        let key = k256::ecdsa::SigningKey::from_slice(&secret).unwrap();
        let address = Address::from_public_key(key.verifying_key());
        assert_eq!(
            address.to_string(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }

    #[test]
    fn stratos_form_round_trips_and_refuses_other_prefixes() {
        let a = Address([7; 20]);
        assert_eq!(a.to_stratos().parse::<Address>().unwrap(), a);
        let cosmos = bech32::encode::<Bech32>(Hrp::parse("cosmos").unwrap(), &[7; 20]).unwrap();
        assert!(cosmos.parse::<Address>().is_err());
        for bad in [
            "",
            "0x12",
            "st1",
            "0xzz5aeb6053f3e94c9b9a09f33669435e7ef1beae",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }
}
