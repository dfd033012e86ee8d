//! Signed requests: every API request carries its payer's EIP-191 signature
//! over what it asks, in four headers.

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use sha3::Keccak256;

use super::Address;
use crate::VerifyError;

/// The payer's address, `0x…` (or `st1…`).
pub const HEADER_ADDRESS: &str = "x-stratos-address";
/// When the request was signed: milliseconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "x-stratos-timestamp";
/// 16 random bytes as 32 hex digits, never used twice by one payer.
pub const HEADER_NONCE: &str = "x-stratos-nonce";
/// `0x` ‖ r ‖ s ‖ v (65 bytes, v = 27 or 28), as Ethereum wallets give it.
pub const HEADER_SIGNATURE: &str = "x-stratos-signature";

pub fn keccak256(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

/// The EIP-191 (version 0x45, `personal_sign`) hash of a message:
/// `keccak256("\x19Ethereum Signed Message:\n" ‖ len ‖ message)`.
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(b"\x19Ethereum Signed Message:\n");
    h.update(message.len().to_string().as_bytes());
    h.update(message);
    h.finalize().into()
}

/// The text a payer signs for one request (`docs/traffic.md`): readable, so
/// a wallet can show what it signs.
///
/// ```text
/// stratosdb request
/// cluster: <cluster id, 64 hex digits>
/// method: POST
/// path: /v1/sql
/// body-sha256: <64 hex digits>
/// timestamp: 1764806400000
/// nonce: <32 hex digits>
/// ```
pub fn request_message(
    cluster_id: &[u8; 32],
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp_ms: u64,
    nonce: &[u8; 16],
) -> String {
    let mut text = Vec::with_capacity(256 + path_and_query.len());
    RequestText::new(cluster_id, body, timestamp_ms, nonce)
        .pieces(method, path_and_query)
        .iter()
        .for_each(|piece| text.extend_from_slice(piece));
    // Every piece is ASCII or one of the two `&str`s.
    String::from_utf8(text).unwrap_or_default()
}

/// The EIP-191 hash of [`request_message`], hashed piece by piece as it is
/// written (no text built): what a node computes for every signed request.
pub fn request_hash(
    cluster_id: &[u8; 32],
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp_ms: u64,
    nonce: &[u8; 16],
) -> [u8; 32] {
    let text = RequestText::new(cluster_id, body, timestamp_ms, nonce);
    let pieces = text.pieces(method, path_and_query);
    let mut length = Decimal::default();
    let mut h = Keccak256::new();
    h.update(b"\x19Ethereum Signed Message:\n");
    h.update(length.of(pieces.iter().map(|p| p.len() as u64).sum()));
    for piece in pieces {
        h.update(piece);
    }
    h.finalize().into()
}

/// SHA-256 of no bytes, in hex: the body hash of every GET.
const EMPTY_BODY_SHA256: &[u8; 64] =
    b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The variable parts of a request's text, spelled out on the stack.
struct RequestText {
    cluster: [u8; 64],
    body_sha256: [u8; 64],
    timestamp: Decimal,
    nonce: [u8; 32],
}

impl RequestText {
    fn new(cluster_id: &[u8; 32], body: &[u8], timestamp_ms: u64, nonce: &[u8; 16]) -> Self {
        let mut text = RequestText {
            cluster: [0; 64],
            body_sha256: *EMPTY_BODY_SHA256,
            timestamp: Decimal::default(),
            nonce: [0; 32],
        };
        lower_hex(cluster_id, &mut text.cluster);
        if !body.is_empty() {
            lower_hex(&Sha256::digest(body), &mut text.body_sha256);
        }
        text.timestamp.of(timestamp_ms);
        lower_hex(nonce, &mut text.nonce);
        text
    }

    /// The text, in order: its only definition.
    fn pieces<'a>(&'a self, method: &'a str, path_and_query: &'a str) -> [&'a [u8]; 12] {
        [
            b"stratosdb request\ncluster: ",
            &self.cluster,
            b"\nmethod: ",
            method.as_bytes(),
            b"\npath: ",
            path_and_query.as_bytes(),
            b"\nbody-sha256: ",
            &self.body_sha256,
            b"\ntimestamp: ",
            self.timestamp.digits(),
            b"\nnonce: ",
            &self.nonce,
        ]
    }
}

/// A `u64` in decimal, without allocating.
#[derive(Default)]
struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    fn of(&mut self, mut n: u64) -> &[u8] {
        self.start = self.buf.len();
        loop {
            self.start -= 1;
            self.buf[self.start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return self.digits();
            }
        }
    }

    fn digits(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hex into `out` (twice as long).
pub(crate) fn lower_hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
    }
}

/// Exactly `2 × N` hex digits (either case) as `N` bytes.
pub(crate) fn hex_array<const N: usize>(digits: &str) -> Option<[u8; N]> {
    fn value(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    let digits = digits.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

/// A request's signature headers, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAuth {
    /// Who claims to pay.
    pub address: Address,
    pub timestamp_ms: u64,
    pub nonce: [u8; 16],
    /// r ‖ s ‖ v.
    pub signature: [u8; 65],
}

impl RequestAuth {
    /// Reads the four headers through `header` (a lookup by lowercase name).
    /// `Ok(None)`: the request carries none of them (unsigned); an error
    /// names the header that is missing or malformed.
    pub fn from_headers<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<RequestAuth>, VerifyError> {
        let names = [
            HEADER_ADDRESS,
            HEADER_TIMESTAMP,
            HEADER_NONCE,
            HEADER_SIGNATURE,
        ];
        // Each header looked up once.
        let values = names.map(header);
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let get = |name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .and_then(|i| values[i])
                .map(str::trim)
                .ok_or_else(|| {
                    VerifyError::BadRequestSignature(format!("header {name} is missing"))
                })
        };
        let bad = |name: &str, why: &str| {
            VerifyError::BadRequestSignature(format!("header {name}: {why}"))
        };
        let address = get(HEADER_ADDRESS)?
            .parse::<Address>()
            .map_err(|e| bad(HEADER_ADDRESS, &e.to_string()))?;
        let timestamp_ms = get(HEADER_TIMESTAMP)?.parse::<u64>().map_err(|_| {
            bad(
                HEADER_TIMESTAMP,
                "expected milliseconds since the Unix epoch",
            )
        })?;
        let nonce: [u8; 16] = hex_array(get(HEADER_NONCE)?)
            .ok_or_else(|| bad(HEADER_NONCE, "expected 32 hex digits"))?;
        let sig = get(HEADER_SIGNATURE)?;
        let signature: [u8; 65] = hex_array(sig.strip_prefix("0x").unwrap_or(sig))
            .ok_or_else(|| bad(HEADER_SIGNATURE, "expected 0x and 130 hex digits (r, s, v)"))?;
        Ok(Some(RequestAuth {
            address,
            timestamp_ms,
            nonce,
            signature,
        }))
    }

    /// The header values, in the order of the constants.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_ADDRESS, self.address.to_string()),
            (HEADER_TIMESTAMP, self.timestamp_ms.to_string()),
            (HEADER_NONCE, hex::encode(self.nonce)),
            (
                HEADER_SIGNATURE,
                format!("0x{}", hex::encode(self.signature)),
            ),
        ]
    }

    /// The hash the payer signed: it names the request uniquely (receipts
    /// carry it).
    pub fn request_hash(
        &self,
        cluster_id: &[u8; 32],
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> [u8; 32] {
        request_hash(
            cluster_id,
            method,
            path_and_query,
            body,
            self.timestamp_ms,
            &self.nonce,
        )
    }

    /// Checks that the signature over this request is the claimed payer's,
    /// returning the request hash. Freshness and replay are the server's
    /// checks (they need a clock and memory).
    pub fn verify(
        &self,
        cluster_id: &[u8; 32],
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<[u8; 32], VerifyError> {
        let hash = self.request_hash(cluster_id, method, path_and_query, body);
        let signer = recover(&hash, &self.signature)?;
        if signer != self.address {
            return Err(VerifyError::BadRequestSignature(format!(
                "the signature is not by {} (it does not match this request, or was made by another key)",
                self.address
            )));
        }
        Ok(hash)
    }
}

/// The address whose key made `signature` (r ‖ s ‖ v) over `prehash`.
pub fn recover(prehash: &[u8; 32], signature: &[u8; 65]) -> Result<Address, VerifyError> {
    let bad = |why: &str| VerifyError::BadRequestSignature(why.to_string());
    let v = match signature[64] {
        27 | 28 => signature[64] - 27,
        0 | 1 => signature[64],
        _ => return Err(bad("signature's v is not 27 or 28")),
    };
    let sig = Signature::from_slice(&signature[..64]).map_err(|_| bad("malformed signature"))?;
    // Only low-s signatures: a high-s twin would be a second valid spelling
    // of the same signature.
    if sig.normalize_s().is_some() {
        return Err(bad(
            "signature's s is not in the lower half of the curve order",
        ));
    }
    let recovery = RecoveryId::from_byte(v).ok_or_else(|| bad("bad recovery id"))?;
    let key = VerifyingKey::recover_from_prehash(prehash, &sig, recovery)
        .map_err(|_| bad("the signature does not recover to any key"))?;
    Ok(Address::from_public_key(&key))
}

/// A payer's key, signing requests.
#[derive(Clone)]
pub struct RequestSigner {
    key: SigningKey,
    address: Address,
}

impl RequestSigner {
    /// From a 32-byte secp256k1 private key.
    pub fn from_bytes(secret: &[u8; 32]) -> Result<RequestSigner, VerifyError> {
        let key = SigningKey::from_slice(secret)
            .map_err(|_| VerifyError::MalformedAddress("not a secp256k1 private key".into()))?;
        let address = Address::from_public_key(key.verifying_key());
        Ok(RequestSigner { key, address })
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs `message` the EIP-191 way: r ‖ s ‖ v with v = 27 or 28.
    pub fn sign_message(&self, message: &[u8]) -> [u8; 65] {
        let hash = eip191_hash(message);
        let mut out = [0u8; 65];
        // Signing a 32-byte prehash with a valid key does not fail.
        if let Ok((sig, recovery)) = self.key.sign_prehash_recoverable(&hash) {
            out[..64].copy_from_slice(&sig.to_bytes());
            out[64] = 27 + recovery.to_byte();
        }
        out
    }

    /// Signs one request.
    pub fn sign_request(
        &self,
        cluster_id: &[u8; 32],
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp_ms: u64,
        nonce: [u8; 16],
    ) -> RequestAuth {
        let message = request_message(
            cluster_id,
            method,
            path_and_query,
            body,
            timestamp_ms,
            &nonce,
        );
        RequestAuth {
            address: self.address,
            timestamp_ms,
            nonce,
            signature: self.sign_message(message.as_bytes()),
        }
    }
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "RequestSigner({})", self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(byte: u8) -> RequestSigner {
        RequestSigner::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_is_refused() {
        let s = signer(1);
        let cluster = [9u8; 32];
        let auth = s.sign_request(
            &cluster,
            "POST",
            "/v1/sql",
            b"{\"sql\":\"SELECT 1\"}",
            1_000,
            [3; 16],
        );
        let hash = auth
            .verify(&cluster, "POST", "/v1/sql", b"{\"sql\":\"SELECT 1\"}")
            .unwrap();
        assert_eq!(
            hash,
            auth.request_hash(&cluster, "POST", "/v1/sql", b"{\"sql\":\"SELECT 1\"}")
        );
        // Another body, path, method or cluster: refused.
        assert!(auth.verify(&cluster, "POST", "/v1/sql", b"{}").is_err());
        assert!(
            auth.verify(&cluster, "POST", "/v1/other", b"{\"sql\":\"SELECT 1\"}")
                .is_err()
        );
        assert!(
            auth.verify(&cluster, "GET", "/v1/sql", b"{\"sql\":\"SELECT 1\"}")
                .is_err()
        );
        assert!(
            auth.verify(&[8; 32], "POST", "/v1/sql", b"{\"sql\":\"SELECT 1\"}")
                .is_err()
        );
        // Another claimed payer, timestamp or nonce: refused.
        let mut other = auth.clone();
        other.address = signer(2).address();
        assert!(
            other
                .verify(&cluster, "POST", "/v1/sql", b"{\"sql\":\"SELECT 1\"}")
                .is_err()
        );
        let mut other = auth.clone();
        other.timestamp_ms += 1;
        assert!(
            other
                .verify(&cluster, "POST", "/v1/sql", b"{\"sql\":\"SELECT 1\"}")
                .is_err()
        );
        let mut other = auth.clone();
        other.nonce[0] ^= 1;
        assert!(
            other
                .verify(&cluster, "POST", "/v1/sql", b"{\"sql\":\"SELECT 1\"}")
                .is_err()
        );
        // Every single-bit flip of the signature is refused.
        for bit in 0..65 * 8 {
            let mut other = auth.clone();
            other.signature[bit / 8] ^= 1 << (bit % 8);
            assert!(
                other
                    .verify(&cluster, "POST", "/v1/sql", b"{\"sql\":\"SELECT 1\"}")
                    .is_err(),
                "bit {bit}"
            );
        }
    }

    /// The text as `docs/traffic.md` spells it, built the plain way.
    fn documented_text(
        cluster: &[u8; 32],
        method: &str,
        path: &str,
        body: &[u8],
        timestamp_ms: u64,
        nonce: &[u8; 16],
    ) -> String {
        format!(
            "stratosdb request\ncluster: {}\nmethod: {}\npath: {}\nbody-sha256: {}\ntimestamp: {}\nnonce: {}",
            hex::encode(cluster),
            method,
            path,
            hex::encode(Sha256::digest(body)),
            timestamp_ms,
            hex::encode(nonce),
        )
    }

    #[test]
    fn the_streamed_request_hash_is_the_hash_of_the_documented_text() {
        let long_path = format!("/v1/collections/t/docs/{}?q=é", "x".repeat(300));
        let long_body = vec![0xa5u8; 1000];
        for (i, (method, path, body)) in [
            ("GET", "/v1/collections/t/docs/d1", &b""[..]),
            ("POST", "/v1/sql", &b"{\"sql\":\"SELECT 1\"}"[..]),
            ("DELETE", long_path.as_str(), &long_body[..]),
            ("", "", &b""[..]),
        ]
        .into_iter()
        .enumerate()
        {
            for timestamp_ms in [0, 7, 1_764_806_400_000, u64::MAX] {
                let cluster = [i as u8 * 31 + 1; 32];
                let nonce = [(timestamp_ms % 251) as u8 ^ 0x5c; 16];
                let text = documented_text(&cluster, method, path, body, timestamp_ms, &nonce);
                assert_eq!(
                    request_message(&cluster, method, path, body, timestamp_ms, &nonce),
                    text
                );
                assert_eq!(
                    request_hash(&cluster, method, path, body, timestamp_ms, &nonce),
                    eip191_hash(text.as_bytes()),
                    "{method} {path} {timestamp_ms}"
                );
            }
        }
        assert_eq!(
            &EMPTY_BODY_SHA256[..],
            hex::encode(Sha256::digest(b"")).as_bytes()
        );
    }

    #[test]
    fn hex_arrays_take_either_case_and_exact_lengths_only() {
        assert_eq!(hex_array::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(hex_array::<2>("0AfF"), Some([0x0a, 0xff]));
        for bad in ["0af", "0aff0", "0ag0", " 0af", "0a f", "", "é0a"] {
            assert_eq!(hex_array::<2>(bad), None, "{bad:?}");
        }
        let mut out = [0u8; 6];
        lower_hex(&[0x00, 0x9f, 0xa0], &mut out);
        assert_eq!(&out, b"009fa0");
    }

    #[test]
    fn headers_round_trip_and_name_what_is_wrong() {
        let auth = signer(5).sign_request(&[0; 32], "GET", "/v1/prices", b"", 7, [1; 16]);
        let headers = auth.headers();
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(RequestAuth::from_headers(lookup).unwrap(), Some(auth));
        assert_eq!(RequestAuth::from_headers(|_| None).unwrap(), None);
        let err =
            RequestAuth::from_headers(|n| (n == HEADER_ADDRESS).then_some("0x00")).unwrap_err();
        assert!(err.to_string().contains(HEADER_ADDRESS), "{err}");
        let err = RequestAuth::from_headers(|n| {
            headers
                .iter()
                .find(|(h, _)| *h == n && n != HEADER_NONCE)
                .map(|(_, v)| v.as_str())
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("x-stratos-nonce is missing"),
            "{err}"
        );
    }

    #[test]
    fn personal_sign_matches_a_known_vector() {
        // ethers.js / viem: the key 0x…01 signing "hello" with personal_sign.
        let mut secret = [0u8; 32];
        secret[31] = 1;
        let s = RequestSigner::from_bytes(&secret).unwrap();
        let sig = s.sign_message(b"hello");
        assert_eq!(recover(&eip191_hash(b"hello"), &sig).unwrap(), s.address());
        assert_eq!(
            hex::encode(eip191_hash(b"hello")),
            "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750"
        );
    }
}
