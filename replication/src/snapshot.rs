//! Raft snapshots of a shard, moved in chunks that can resume.
//!
//! The raft `Snapshot.data` carries only a [`SnapshotDescriptor`]: which
//! snapshot (group, index, term), who has it, the shard root the engine
//! reported, and the length and SHA-256 of every chunk. The chunks stay on
//! the sender's disk ([`SnapshotFiles`], `DIR/snapshots/out`) until the
//! transfer ends or expires; the receiver pulls them one by one over the
//! [`crate::Transport`] (`fetch.rs`), keeps what it verified in
//! `DIR/snapshots/in`, and installs from there. The wire and disk formats
//! are in `docs/replication.md` ("Snapshots").

mod fetch;
mod files;
mod limit;
mod transfers;

use sha2::{Digest as _, Sha256};
use stratosdb_engine::{Hash, Shard};

use crate::{GroupId, NodeId, ReplicationError, Result};

pub(crate) use fetch::{FetchContext, Fetcher};
pub use files::{IncomingFile, SNAPSHOT_DIR, SnapshotFiles};
pub use limit::{ChunkReadLimit, ChunkReadTurn};
pub(crate) use transfers::Transfers;
pub use transfers::{SnapshotTransfer, TransferDirection};

/// The descriptor format's version; a receiver refuses any other.
pub const DESCRIPTOR_VERSION: u8 = 1;
/// Chunks one snapshot may have: bounds the descriptor (36 bytes a chunk).
pub const MAX_SNAPSHOT_CHUNKS: usize = 1 << 16;
/// The largest chunk a descriptor may announce (the engine's own limit).
pub const MAX_CHUNK_BYTES: usize = stratosdb_engine::limits::MAX_SNAPSHOT_CHUNK_BYTES;

const MAGIC: &[u8; 4] = b"SDBS";
/// Bytes of the descriptor before the chunk list.
const HEADER_BYTES: usize = 4 + 1 + 4 + 8 + 8 + 8 + 32 + 4 + 8;
const CHUNK_ENTRY_BYTES: usize = 4 + 32;

/// Names one snapshot of one group: the raft index and term it stands at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotKey {
    pub group: GroupId,
    pub index: u64,
    pub term: u64,
}

impl SnapshotKey {
    /// The file name stem of this snapshot on disk.
    pub fn file_stem(&self) -> String {
        format!("{}-{}-{}", self.group, self.index, self.term)
    }
}

/// One chunk as the descriptor announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    pub len: u32,
    pub sha256: Hash,
}

impl ChunkInfo {
    pub fn of(bytes: &[u8]) -> Result<ChunkInfo> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&l| l as usize <= MAX_CHUNK_BYTES)
            .ok_or(DescriptorError::ChunkTooLarge {
                chunk: 0,
                len: bytes.len() as u64,
                limit: MAX_CHUNK_BYTES,
            })?;
        Ok(ChunkInfo {
            len,
            sha256: Sha256::digest(bytes).into(),
        })
    }

    /// Whether `bytes` are this chunk.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.len as usize && Sha256::digest(bytes)[..] == self.sha256[..]
    }
}

/// What a raft snapshot message carries instead of the snapshot itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDescriptor {
    pub key: SnapshotKey,
    /// The node that holds the chunks.
    pub sender: NodeId,
    /// The shard root the engine reported for the export.
    pub root: Hash,
    pub chunks: Vec<ChunkInfo>,
}

/// Why descriptor bytes were refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("snapshot descriptor of {len} bytes is shorter than its {need} byte header")]
    Truncated { len: usize, need: usize },
    #[error("not a snapshot descriptor (bad magic bytes)")]
    BadMagic,
    #[error("snapshot descriptor version {0} is unknown (this node reads {DESCRIPTOR_VERSION})")]
    UnknownVersion(u8),
    #[error("snapshot of {count} chunks is over the limit of {limit}")]
    TooManyChunks { count: u64, limit: usize },
    #[error("chunk {chunk} of {len} bytes is over the limit of {limit} bytes")]
    ChunkTooLarge { chunk: u32, len: u64, limit: usize },
    #[error("snapshot descriptor should be {expected} bytes for its chunk count, it is {actual}")]
    WrongLength { expected: usize, actual: usize },
    #[error("snapshot descriptor says {stated} bytes in total, its chunks add up to {sum}")]
    TotalMismatch { stated: u64, sum: u64 },
    #[error("snapshot of {bytes} bytes is over the limit of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
}

impl SnapshotDescriptor {
    pub fn total_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }

    /// Where chunk `n` starts in the concatenated chunks.
    pub fn offset_of(&self, n: u32) -> u64 {
        self.chunks
            .iter()
            .take(n as usize)
            .map(|c| u64::from(c.len))
            .sum()
    }

    /// `magic "SDBS", version: u8, group: u32, index: u64, term: u64,
    /// sender: u64, root: [u8; 32], chunk count: u32, total bytes: u64`, then
    /// per chunk `len: u32, sha256: [u8; 32]`; integers big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.chunks.len() * CHUNK_ENTRY_BYTES);
        out.extend(MAGIC);
        out.push(DESCRIPTOR_VERSION);
        out.extend(self.key.group.to_be_bytes());
        out.extend(self.key.index.to_be_bytes());
        out.extend(self.key.term.to_be_bytes());
        out.extend(self.sender.to_be_bytes());
        out.extend(self.root);
        out.extend((self.chunks.len() as u32).to_be_bytes());
        out.extend(self.total_bytes().to_be_bytes());
        for c in &self.chunks {
            out.extend(c.len.to_be_bytes());
            out.extend(c.sha256);
        }
        out
    }

    /// Decodes a descriptor, refusing one whose snapshot is over
    /// `max_total_bytes`; every count is checked before anything is allocated.
    pub fn decode(bytes: &[u8], max_total_bytes: u64) -> Result<Self, DescriptorError> {
        if bytes.len() < HEADER_BYTES {
            return Err(DescriptorError::Truncated {
                len: bytes.len(),
                need: HEADER_BYTES,
            });
        }
        let mut r = Fields(bytes);
        if r.take::<4>() != *MAGIC {
            return Err(DescriptorError::BadMagic);
        }
        let [version] = r.take::<1>();
        if version != DESCRIPTOR_VERSION {
            return Err(DescriptorError::UnknownVersion(version));
        }
        let group = u32::from_be_bytes(r.take());
        let index = u64::from_be_bytes(r.take());
        let term = u64::from_be_bytes(r.take());
        let sender = u64::from_be_bytes(r.take());
        let root = r.take::<32>();
        let count = u32::from_be_bytes(r.take());
        let stated = u64::from_be_bytes(r.take());
        if count as usize > MAX_SNAPSHOT_CHUNKS {
            return Err(DescriptorError::TooManyChunks {
                count: count.into(),
                limit: MAX_SNAPSHOT_CHUNKS,
            });
        }
        if stated > max_total_bytes {
            return Err(DescriptorError::TooLarge {
                bytes: stated,
                limit: max_total_bytes,
            });
        }
        let expected = HEADER_BYTES + count as usize * CHUNK_ENTRY_BYTES;
        if bytes.len() != expected {
            return Err(DescriptorError::WrongLength {
                expected,
                actual: bytes.len(),
            });
        }
        let mut chunks = Vec::with_capacity(count as usize);
        for chunk in 0..count {
            let len = u32::from_be_bytes(r.take());
            if len as usize > MAX_CHUNK_BYTES {
                return Err(DescriptorError::ChunkTooLarge {
                    chunk,
                    len: len.into(),
                    limit: MAX_CHUNK_BYTES,
                });
            }
            chunks.push(ChunkInfo {
                len,
                sha256: r.take(),
            });
        }
        let descriptor = SnapshotDescriptor {
            key: SnapshotKey { group, index, term },
            sender,
            root,
            chunks,
        };
        let sum = descriptor.total_bytes();
        if sum != stated {
            return Err(DescriptorError::TotalMismatch { stated, sum });
        }
        Ok(descriptor)
    }
}

/// Reads fixed-size fields; the caller checked the length first.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut field = [0u8; N];
        let (head, rest) = self.0.split_at(N.min(self.0.len()));
        field[..head.len()].copy_from_slice(head);
        self.0 = rest;
        field
    }
}

/// Exports the shard in chunks of about `chunk_bytes`: the applied index the
/// export stands at, and the chunks (in memory: for tests and benches; the
/// node writes them to disk with [`SnapshotFiles`]).
pub fn export_chunks(shard: &Shard, chunk_bytes: usize) -> Result<(u64, Vec<Vec<u8>>)> {
    let mut chunks = Vec::new();
    let summary = shard.export_snapshot(chunk_bytes, |c| {
        chunks.push(c);
        Ok(())
    })?;
    Ok((summary.applied_index, chunks))
}

/// Installs chunks that must stand at raft index `index` with shard root
/// `root`. The engine rebuilds the shard beside the old one and checks the
/// root its header states; this also checks it against the descriptor's.
pub fn install(
    shard: &Shard,
    chunks: impl IntoIterator<Item = Vec<u8>>,
    index: u64,
    root: &Hash,
) -> Result<()> {
    let summary = shard.import_snapshot(chunks)?;
    if summary.applied_index != index {
        return Err(ReplicationError::SnapshotCorrupt(format!(
            "snapshot data stands at index {}, its metadata says {index}",
            summary.applied_index
        )));
    }
    if summary.root != *root {
        return Err(ReplicationError::SnapshotCorrupt(
            "the installed root differs from the descriptor's".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(chunks: usize) -> SnapshotDescriptor {
        SnapshotDescriptor {
            key: SnapshotKey {
                group: 7,
                index: 1234,
                term: 5,
            },
            sender: 42,
            root: [9; 32],
            chunks: (0..chunks)
                .map(|i| ChunkInfo::of(&vec![i as u8; 100 + i]).unwrap())
                .collect(),
        }
    }

    #[test]
    fn a_descriptor_round_trips() {
        for n in [0, 1, 37] {
            let d = sample(n);
            let bytes = d.encode();
            assert_eq!(SnapshotDescriptor::decode(&bytes, u64::MAX).unwrap(), d);
        }
        let d = sample(3);
        assert_eq!(d.offset_of(0), 0);
        assert_eq!(d.offset_of(2), 100 + 101);
        assert_eq!(d.total_bytes(), 100 + 101 + 102);
    }

    #[test]
    fn malformed_descriptors_get_typed_errors() {
        let bytes = sample(3).encode();
        let decode = |b: &[u8]| SnapshotDescriptor::decode(b, u64::MAX);
        assert!(matches!(
            decode(&bytes[..10]),
            Err(DescriptorError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&[]),
            Err(DescriptorError::Truncated { .. })
        ));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad), Err(DescriptorError::BadMagic));
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert_eq!(decode(&bad), Err(DescriptorError::UnknownVersion(9)));
        // Cut inside the chunk list, and one byte too many.
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DescriptorError::WrongLength { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode(&long),
            Err(DescriptorError::WrongLength { .. })
        ));
        // A total that does not add up.
        let mut bad = bytes.clone();
        let total_at = HEADER_BYTES - 8;
        bad[total_at..HEADER_BYTES].copy_from_slice(&7u64.to_be_bytes());
        assert!(matches!(
            decode(&bad),
            Err(DescriptorError::TotalMismatch { stated: 7, .. })
        ));
    }

    #[test]
    fn oversized_descriptors_are_refused_before_allocating() {
        let bytes = sample(3).encode();
        // A chunk count far over the limit, with a header-only body.
        let mut huge = bytes[..HEADER_BYTES].to_vec();
        let count_at = HEADER_BYTES - 12;
        huge[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            SnapshotDescriptor::decode(&huge, u64::MAX),
            Err(DescriptorError::TooManyChunks { .. })
        ));
        // More bytes in total than the receiver takes.
        assert_eq!(
            SnapshotDescriptor::decode(&bytes, 100),
            Err(DescriptorError::TooLarge {
                bytes: 303,
                limit: 100
            })
        );
        // One chunk over the engine's chunk limit.
        let mut d = sample(1);
        d.chunks[0].len = u32::MAX;
        assert!(matches!(
            SnapshotDescriptor::decode(&d.encode(), u64::MAX),
            Err(DescriptorError::ChunkTooLarge { chunk: 0, .. })
        ));
    }

    #[test]
    fn a_chunk_matches_only_its_own_bytes() {
        let info = ChunkInfo::of(b"hello").unwrap();
        assert!(info.matches(b"hello"));
        assert!(!info.matches(b"hellO"));
        assert!(!info.matches(b"hello!"));
    }
}
