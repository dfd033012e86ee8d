//! Raft snapshots of a shard: the engine's chunked export, packed into the
//! raft snapshot's data for now. The chunks stay separate on both ends so a
//! later transport can stream them to a lagging replica one at a time.

use stratosdb_engine::Shard;

use crate::codec::{pack_chunks, unpack_chunks};
use crate::{ReplicationError, Result};

/// Exports the shard in chunks of about `chunk_bytes`: the applied index the
/// export stands at, and the chunks.
pub fn export_chunks(shard: &Shard, chunk_bytes: usize) -> Result<(u64, Vec<Vec<u8>>)> {
    let mut chunks = Vec::new();
    let summary = shard.export_snapshot(chunk_bytes, |c| {
        chunks.push(c);
        Ok(())
    })?;
    Ok((summary.applied_index, chunks))
}

/// The export as one raft snapshot payload.
pub fn export(shard: &Shard, chunk_bytes: usize) -> Result<(u64, Vec<u8>)> {
    let (index, chunks) = export_chunks(shard, chunk_bytes)?;
    Ok((index, pack_chunks(&chunks)))
}

/// Installs a snapshot payload that must stand at raft index `index`. The
/// engine rebuilds the shard beside the old one and checks the root first.
pub fn install(shard: &Shard, data: &[u8], index: u64) -> Result<()> {
    let chunks = unpack_chunks(data)?;
    let summary = shard.import_snapshot(chunks)?;
    if summary.applied_index != index {
        return Err(ReplicationError::Malformed(format!(
            "snapshot data stands at index {}, its metadata says {index}",
            summary.applied_index
        )));
    }
    Ok(())
}
