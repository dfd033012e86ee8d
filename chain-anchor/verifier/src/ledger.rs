//! The local ledger's blocks and log file, and their verification.
//!
//! The local ledger is an append-only, hash-chained log of signed blocks in
//! one file. This module holds everything an auditor needs to check it
//! offline (no file access: it works on bytes): the block encoding, the block
//! hash, the record framing with its checksums, and the chain rules. The
//! `stratosdb-chain-anchor` crate writes the file; `docs/chain.md` ("The
//! local ledger") gives the format byte for byte.
//!
//! ```
//! use stratosdb_verifier::ledger::{Block, Entry, LogReader, frame, FILE_HEADER};
//! // A block as the ledger writes it, signed by whoever appends it.
//! let block = Block::unsigned(0, [0; 32], 1_700_000_000_000, [1; 32], Entry { kind: 9, data: b"x".to_vec() });
//! let mut log = FILE_HEADER.to_vec();
//! log.extend(frame(&block.encode()));
//! let mut reader = LogReader::new(&log).unwrap();
//! let read = reader.next_block().unwrap().unwrap();
//! assert_eq!(read.block, block);
//! // The signature is all zeros here: the chain check refuses it, naming the height.
//! let err = read.block.verify_after(None).unwrap_err();
//! assert!(err.to_string().contains("block 0"));
//! ```

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{AnchorPayload, Hash, VerifyError};

/// The first 8 bytes of a ledger file: `SDBL`, version 1, three zero bytes.
pub const FILE_HEADER: [u8; 8] = *b"SDBL\x01\0\0\0";
/// The magic at the start of every block.
pub const BLOCK_MAGIC: [u8; 4] = *b"SDBB";
pub const BLOCK_VERSION: u8 = 1;
/// The domain tag of a block hash (shard leaves use 0x10, `docs/merkle.md`
/// 0x00–0x03).
pub const TAG_BLOCK: u8 = 0x20;
/// The largest entry a block may carry: far above any entry kind's size, and
/// low enough that a damaged length cannot make a reader allocate much.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Bytes of a block before its entry's data.
const HEAD_LEN: usize = 4 + 1 + 8 + 32 + 8 + 32 + 1 + 4;
const SIGNATURE_LEN: usize = 64;
/// Bytes of a record's framing: length, its checksum, the body's checksum.
pub const FRAME_OVERHEAD: usize = 12;

/// Entry kind 1: an anchor payload ([`AnchorPayload::encode`]).
pub const ENTRY_ANCHOR: u8 = 1;
/// Entry kind 2: a STOS deposit signed by its account
/// ([`crate::traffic::DepositEntry::encode`]).
pub const ENTRY_DEPOSIT: u8 = 2;
/// Entry kind 3: an epoch's settlement, the hash of its volume report and the
/// nodes' signatures ([`crate::traffic::SettlementEntry::encode`]).
pub const ENTRY_SETTLEMENT: u8 = 3;

/// Entry kind 4: a payout to an account
/// ([`crate::traffic::PayoutEntry::encode`]).
pub const ENTRY_PAYOUT: u8 = 4;

/// What a block records: a kind byte and its bytes. The ledger checks the
/// kinds it knows ([`ENTRY_ANCHOR`]); others are carried as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: u8,
    pub data: Vec<u8>,
}

impl Entry {
    /// The entry of an anchor.
    pub fn anchor(payload: &AnchorPayload) -> Entry {
        Entry {
            kind: ENTRY_ANCHOR,
            data: payload.encode(),
        }
    }

    /// The anchor payload, if this is an anchor entry (an error if it is one
    /// whose bytes are not a payload).
    /// The settlement of a kind-3 entry, decoded (its signatures are checked
    /// against the cluster's nodes by whoever knows them).
    pub fn settlement(&self) -> Option<Result<crate::traffic::SettlementEntry, VerifyError>> {
        (self.kind == ENTRY_SETTLEMENT).then(|| crate::traffic::SettlementEntry::decode(&self.data))
    }

    /// The payout of a kind-4 entry, decoded.
    pub fn payout(&self) -> Option<Result<crate::traffic::PayoutEntry, VerifyError>> {
        (self.kind == ENTRY_PAYOUT).then(|| crate::traffic::PayoutEntry::decode(&self.data))
    }

    /// The deposit of a kind-2 entry, checked (its account's signature).
    pub fn deposit(&self) -> Option<Result<crate::traffic::DepositEntry, VerifyError>> {
        (self.kind == ENTRY_DEPOSIT).then(|| {
            let entry = crate::traffic::DepositEntry::decode(&self.data)?;
            entry.verify()?;
            Ok(entry)
        })
    }

    pub fn anchor_payload(&self) -> Option<Result<AnchorPayload, VerifyError>> {
        (self.kind == ENTRY_ANCHOR).then(|| AnchorPayload::decode(&self.data))
    }
}

/// One block of the local ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// 0 for the first block, then one more per block.
    pub height: u64,
    /// The hash of the block at `height - 1` (32 zero bytes for the first).
    pub previous: Hash,
    /// When it was appended, milliseconds since the Unix epoch; never lower
    /// than the previous block's.
    pub timestamp_ms: u64,
    /// The signer's ed25519 public key.
    pub signer: [u8; 32],
    pub entry: Entry,
    /// The signer's ed25519 signature over [`Block::hash`].
    pub signature: [u8; 64],
}

impl Block {
    /// A block without its signature yet (64 zero bytes).
    pub fn unsigned(
        height: u64,
        previous: Hash,
        timestamp_ms: u64,
        signer: [u8; 32],
        entry: Entry,
    ) -> Block {
        Block {
            height,
            previous,
            timestamp_ms,
            signer,
            entry,
            signature: [0; 64],
        }
    }

    /// Everything but the signature: what the hash covers.
    fn encode_signed_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&BLOCK_MAGIC);
        out.push(BLOCK_VERSION);
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.previous);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.signer);
        out.push(self.entry.kind);
        out.extend_from_slice(&(self.entry.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.entry.data);
    }

    /// `SHA-256(0x20 ‖ the block's bytes up to its signature)`.
    pub fn hash(&self) -> Hash {
        let mut bytes = Vec::with_capacity(HEAD_LEN + self.entry.data.len());
        self.encode_signed_part(&mut bytes);
        let mut h = Sha256::new();
        h.update([TAG_BLOCK]);
        h.update(&bytes);
        h.finalize().into()
    }

    /// The block's bytes (a record's body).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD_LEN + self.entry.data.len() + SIGNATURE_LEN);
        self.encode_signed_part(&mut out);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Reads a block's bytes, refusing anything that is not exactly one block.
    pub fn decode(bytes: &[u8]) -> Result<Block, String> {
        if bytes.len() < HEAD_LEN + SIGNATURE_LEN {
            return Err(format!("{} bytes, too short for a block", bytes.len()));
        }
        if bytes[..4] != BLOCK_MAGIC {
            return Err("does not begin with the magic SDBB".into());
        }
        if bytes[4] != BLOCK_VERSION {
            return Err(format!("unknown block version {}", bytes[4]));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let hash_at = |at: usize| {
            let mut h = [0u8; 32];
            h.copy_from_slice(&bytes[at..at + 32]);
            h
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[HEAD_LEN - 4..HEAD_LEN]);
        let len = u32::from_be_bytes(len) as usize;
        if bytes.len() != HEAD_LEN + len + SIGNATURE_LEN {
            return Err(format!(
                "entry of {len} bytes in a block of {} bytes",
                bytes.len()
            ));
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[HEAD_LEN + len..]);
        Ok(Block {
            height: u64_at(5),
            previous: hash_at(13),
            timestamp_ms: u64_at(45),
            signer: hash_at(53),
            entry: Entry {
                kind: bytes[85],
                data: bytes[HEAD_LEN..HEAD_LEN + len].to_vec(),
            },
            signature,
        })
    }

    /// Checks the block's signature against its signer key.
    pub fn verify_signature(&self) -> Result<(), VerifyError> {
        let broken = |reason: String| self.broken(reason);
        let key = VerifyingKey::from_bytes(&self.signer)
            .map_err(|e| broken(format!("signer key is not an ed25519 key: {e}")))?;
        key.verify_strict(&self.hash(), &Signature::from_bytes(&self.signature))
            .map_err(|_| broken("bad signature".into()))
    }

    /// Checks this block as the one after `previous` (`None`: the first):
    /// its height, its link to the previous hash, its timestamp, its
    /// signature, and that an anchor entry holds a payload.
    pub fn verify_after(&self, previous: Option<&Block>) -> Result<(), VerifyError> {
        let (height, hash, time) = match previous {
            Some(p) => (p.height + 1, p.hash(), p.timestamp_ms),
            None => (0, [0; 32], 0),
        };
        self.verify_link(height, &hash, time)?;
        self.verify_signature()?;
        if let Some(Err(e)) = self.entry.anchor_payload() {
            return Err(self.broken(format!("anchor entry: {e}")));
        }
        if let Some(Err(e)) = self.entry.deposit() {
            return Err(self.broken(format!("deposit entry: {e}")));
        }
        if let Some(Err(e)) = self.entry.settlement() {
            return Err(self.broken(format!("settlement entry: {e}")));
        }
        if let Some(Err(e)) = self.entry.payout() {
            return Err(self.broken(format!("payout entry: {e}")));
        }
        Ok(())
    }

    /// Checks the block's place in the chain: at `height`, after a block of
    /// hash `previous` made at `previous_time`.
    pub fn verify_link(
        &self,
        height: u64,
        previous: &Hash,
        previous_time: u64,
    ) -> Result<(), VerifyError> {
        if self.height != height {
            return Err(self.broken(format!("says height {}, expected {height}", self.height)));
        }
        if &self.previous != previous {
            return Err(self.broken(format!(
                "names previous block {}, the block before it is {}",
                hex::encode(self.previous),
                hex::encode(previous)
            )));
        }
        if self.timestamp_ms < previous_time {
            return Err(self.broken(format!(
                "timestamp {} is before the previous block's {previous_time}",
                self.timestamp_ms
            )));
        }
        Ok(())
    }

    fn broken(&self, reason: String) -> VerifyError {
        VerifyError::LedgerBlock {
            height: self.height,
            reason,
        }
    }
}

/// A record of the log file: `u32be(len) ‖ u32be(CRC-32(len bytes)) ‖ body ‖
/// u32be(CRC-32(body))`. The length has its own checksum so that a damaged
/// length is told apart from a record cut short by a crash.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_be_bytes();
    let mut out = Vec::with_capacity(body.len() + FRAME_OVERHEAD);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32fast::hash(&len).to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out
}

/// One block read from a log, with where its record is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBlock {
    pub block: Block,
    /// The record's offset in the file.
    pub offset: u64,
    /// The record's length, framing included.
    pub len: u64,
}

/// Reads the blocks of a log file's bytes in order, checking each record's
/// framing and checksums (not the chain: see [`Block::verify_after`]).
///
/// A record that the bytes end inside of (a crash in the middle of an append:
/// a prefix of its bytes is on disk) ends the log: [`LogReader::torn`] then
/// says how many bytes it left. Any other damage is an error naming the height
/// the record would have.
pub struct LogReader<'a> {
    bytes: &'a [u8],
    at: usize,
    height: u64,
    torn: usize,
}

impl<'a> LogReader<'a> {
    /// A reader over a whole file (from its header).
    pub fn new(bytes: &'a [u8]) -> Result<LogReader<'a>, VerifyError> {
        if bytes.len() < FILE_HEADER.len() {
            // A file cut short while it was being created: treat as empty.
            if FILE_HEADER.starts_with(bytes) {
                return Ok(LogReader::resume(&[], 0, 0));
            }
        } else if bytes[..FILE_HEADER.len()] == FILE_HEADER {
            return Ok(LogReader::resume(bytes, FILE_HEADER.len(), 0));
        }
        Err(VerifyError::MalformedLedger(
            "the file does not begin with the ledger header SDBL 01 00 00 00".into(),
        ))
    }

    /// A reader that starts at byte `offset` of `bytes`, where the block at
    /// `height` begins.
    pub fn resume(bytes: &'a [u8], offset: usize, height: u64) -> LogReader<'a> {
        LogReader {
            bytes,
            at: offset,
            height,
            torn: 0,
        }
    }

    /// Where the next record begins (after the last whole block read).
    pub fn offset(&self) -> usize {
        self.at
    }

    /// Bytes after the last whole record that are only the start of one.
    pub fn torn(&self) -> usize {
        self.torn
    }

    /// The next block, `None` at the end (or at a torn last record).
    pub fn next_block(&mut self) -> Result<Option<ReadBlock>, VerifyError> {
        let rest = &self.bytes[self.at..];
        if rest.is_empty() {
            return Ok(None);
        }
        let broken = |reason: String| VerifyError::LedgerBlock {
            height: self.height,
            reason: format!("record at byte {}: {reason}", self.at),
        };
        if rest.len() < 8 {
            self.torn = rest.len();
            return Ok(None);
        }
        let len_bytes = &rest[..4];
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&rest[4..8]);
        if crc32fast::hash(len_bytes) != u32::from_be_bytes(crc) {
            return Err(broken("the length's checksum does not match".into()));
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(len_bytes);
        let len = u32::from_be_bytes(len) as usize;
        if len > HEAD_LEN + MAX_ENTRY_BYTES + SIGNATURE_LEN {
            return Err(broken(format!("a record of {len} bytes is too long")));
        }
        let total = len + FRAME_OVERHEAD;
        if rest.len() < total {
            self.torn = rest.len();
            return Ok(None);
        }
        let body = &rest[8..8 + len];
        crc.copy_from_slice(&rest[8 + len..total]);
        if crc32fast::hash(body) != u32::from_be_bytes(crc) {
            return Err(broken("the block's checksum does not match".into()));
        }
        let block = Block::decode(body).map_err(broken)?;
        let read = ReadBlock {
            block,
            offset: self.at as u64,
            len: total as u64,
        };
        self.at += total;
        self.height += 1;
        Ok(Some(read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed_chain(n: u64) -> (Vec<Block>, Vec<u8>) {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut blocks: Vec<Block> = Vec::new();
        let mut log = FILE_HEADER.to_vec();
        for height in 0..n {
            let previous = blocks.last().map(Block::hash).unwrap_or([0; 32]);
            let payload = AnchorPayload {
                cluster_id: [1; 32],
                epoch: height + 1,
                cluster_root: [height as u8; 32],
                leaf_count: 1,
                previous,
            };
            let mut block = Block::unsigned(
                height,
                previous,
                1000 + height,
                key.verifying_key().to_bytes(),
                Entry::anchor(&payload),
            );
            block.signature = key.sign(&block.hash()).to_bytes();
            log.extend(frame(&block.encode()));
            blocks.push(block);
        }
        (blocks, log)
    }

    /// Framing and links first, signatures last: signatures are slow in a
    /// debug build, and most damage is caught before them.
    fn check_all(log: &[u8]) -> Result<(u64, usize), VerifyError> {
        let mut reader = LogReader::new(log)?;
        let mut blocks: Vec<Block> = Vec::new();
        while let Some(read) = reader.next_block()? {
            let (hash, time) = blocks
                .last()
                .map(|b| (b.hash(), b.timestamp_ms))
                .unwrap_or_default();
            read.block.verify_link(blocks.len() as u64, &hash, time)?;
            blocks.push(read.block);
        }
        for (i, block) in blocks.iter().enumerate() {
            block.verify_after(i.checked_sub(1).map(|p| &blocks[p]))?;
        }
        Ok((blocks.len() as u64, reader.torn()))
    }

    #[test]
    fn a_signed_chain_verifies_and_its_layout_is_the_documented_one() {
        let (blocks, log) = signed_chain(3);
        assert_eq!(check_all(&log).unwrap(), (3, 0));
        let body = blocks[1].encode();
        assert_eq!(body.len(), 90 + 113 + 64);
        assert_eq!(&body[0..5], b"SDBB\x01");
        assert_eq!(&body[5..13], &1u64.to_be_bytes());
        assert_eq!(&body[13..45], &blocks[0].hash());
        assert_eq!(&body[45..53], &1001u64.to_be_bytes());
        assert_eq!(body[85], ENTRY_ANCHOR);
        assert_eq!(&body[86..90], &113u32.to_be_bytes());
        let mut h = Sha256::new();
        h.update([0x20]);
        h.update(&body[..90 + 113]);
        assert_eq!(<[u8; 32]>::from(h.finalize()), blocks[1].hash());
        let record = frame(&body);
        assert_eq!(&record[0..4], &(body.len() as u32).to_be_bytes());
        assert_eq!(&record[8..8 + body.len()], &body[..]);
    }

    #[test]
    fn every_cut_of_the_last_record_is_a_torn_tail() {
        let (_, log) = signed_chain(3);
        let (_, two) = signed_chain(2);
        for cut in two.len() + 1..log.len() {
            let mut reader = LogReader::new(&log[..cut]).unwrap();
            let mut count = 0;
            while reader.next_block().unwrap().is_some() {
                count += 1;
            }
            assert_eq!((count, reader.torn()), (2, cut - two.len()), "{cut}");
            assert_eq!(reader.offset(), two.len());
        }
        assert_eq!(
            check_all(&log[..log.len() - 1]).unwrap(),
            (2, log.len() - two.len() - 1)
        );
    }

    #[test]
    fn every_bit_flip_in_a_block_is_caught_naming_its_height() {
        let (_, log) = signed_chain(3);
        let (_, one) = signed_chain(1);
        let (_, two) = signed_chain(2);
        for (height, range) in [(1u64, one.len()..two.len()), (2, two.len()..log.len())] {
            for byte in range {
                for bit in 0..8 {
                    let mut damaged = log.clone();
                    damaged[byte] ^= 1 << bit;
                    let err = check_all(&damaged).unwrap_err();
                    let VerifyError::LedgerBlock { height: h, .. } = err else {
                        panic!("byte {byte} bit {bit}: {err}");
                    };
                    assert_eq!(h, height, "byte {byte} bit {bit}: {err}");
                }
            }
        }
    }

    #[test]
    fn a_resigned_block_that_breaks_the_links_is_caught() {
        let (mut blocks, _) = signed_chain(3);
        let key = SigningKey::from_bytes(&[7; 32]);
        blocks[1].entry.data[50] ^= 1;
        blocks[1].signature = key.sign(&blocks[1].hash()).to_bytes();
        blocks[1].verify_after(Some(&blocks[0])).unwrap();
        let err = blocks[2].verify_after(Some(&blocks[1])).unwrap_err();
        assert!(err.to_string().contains("block 2"), "{err}");
        let other = SigningKey::from_bytes(&[8; 32]);
        blocks[1].signature = other.sign(&blocks[1].hash()).to_bytes();
        assert!(blocks[1].verify_after(Some(&blocks[0])).is_err());
    }

    #[test]
    fn another_file_is_refused() {
        assert!(LogReader::new(b"hello world").is_err());
        assert!(LogReader::new(b"SDBL").is_ok());
    }
}
