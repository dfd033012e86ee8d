//! Snapshot chunks on disk, in the node's data folder:
//!
//! - `snapshots/out/G-I-T.chunks` + `.desc`: a snapshot this node exported
//!   (the chunks back to back, then its descriptor, written last: a `.desc`
//!   means the chunks are complete and synced). Served until a newer export
//!   of the group replaces it or it expires (`expiry` after it was last
//!   served).
//! - `snapshots/in/G-I-T.part` + `.desc`: a snapshot being fetched, the
//!   verified chunks back to back; renamed `.chunks` once every chunk is in.
//!   A restarted node resumes from the first chunk that does not verify.
//!
//! Files older than `expiry` are removed at open and by [`SnapshotFiles::sweep`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use stratosdb_engine::{PreparedImport, Shard};

use super::{ChunkInfo, SnapshotDescriptor, SnapshotKey};
use crate::{GroupId, NodeId, ReplicationError, Result};

/// The snapshot folder inside the node's data folder.
pub const SNAPSHOT_DIR: &str = "snapshots";

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ReplicationError {
    ReplicationError::SnapshotIo(format!("{what} {}: {e}", path.display()))
}

pub struct SnapshotFiles {
    out_dir: PathBuf,
    in_dir: PathBuf,
    expiry: Duration,
    max_bytes: u64,
    /// Descriptors of the exports being served, read once from disk.
    served: Mutex<HashMap<SnapshotKey, Arc<SnapshotDescriptor>>>,
    /// Complete incoming snapshots already imported beside their shard by
    /// the fetcher (one per group), for the loop's install to switch in.
    prepared: Mutex<HashMap<GroupId, (SnapshotKey, PreparedImport)>>,
}

impl SnapshotFiles {
    /// Opens (or creates) `dir/snapshots`, removing what expired and what a
    /// crash left half-written.
    pub fn open(dir: &Path, expiry: Duration, max_bytes: u64) -> Result<Arc<SnapshotFiles>> {
        let root = dir.join(SNAPSHOT_DIR);
        let files = SnapshotFiles {
            out_dir: root.join("out"),
            in_dir: root.join("in"),
            expiry,
            max_bytes,
            served: Mutex::default(),
            prepared: Mutex::default(),
        };
        for d in [&files.out_dir, &files.in_dir] {
            fs::create_dir_all(d).map_err(|e| io_err("cannot create", d, e))?;
            for path in list(d)? {
                let is_tmp = path.extension().is_some_and(|x| x == "tmp");
                if is_tmp {
                    remove(&path);
                }
            }
        }
        // An export without its descriptor never finished.
        for path in list(&files.out_dir)? {
            if path.extension().is_some_and(|x| x == "chunks")
                && !path.with_extension("desc").exists()
            {
                remove(&path);
            }
        }
        files.sweep();
        Ok(Arc::new(files))
    }

    /// Largest snapshot this node stores, and total bytes of incoming ones.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Removes snapshot files not used for `expiry`.
    pub fn sweep(&self) {
        let now = SystemTime::now();
        for d in [&self.out_dir, &self.in_dir] {
            let Ok(paths) = list(d) else { continue };
            for path in paths {
                // An export's chunks live as long as its descriptor, which
                // serving keeps fresh.
                let desc = path.with_extension("desc");
                let stamp = if path.extension().is_some_and(|x| x == "chunks") && desc.exists() {
                    &desc
                } else {
                    &path
                };
                let age = fs::metadata(stamp)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok());
                if age.is_some_and(|a| a > self.expiry) {
                    tracing::info!(path = %path.display(), "expired snapshot file removed");
                    remove(&path);
                }
            }
        }
        let out_dir = &self.out_dir;
        self.served
            .lock()
            .retain(|k, _| out_dir.join(format!("{}.desc", k.file_stem())).exists());
    }

    // ---- outgoing ---------------------------------------------------------

    fn out_path(&self, key: &SnapshotKey, ext: &str) -> PathBuf {
        self.out_dir.join(format!("{}.{ext}", key.file_stem()))
    }

    /// Exports the shard to disk in chunks of about `chunk_bytes`, with
    /// `term_of` giving the term of the index the export stands at. Replaces
    /// the group's older exports.
    pub fn export(
        &self,
        shard: &Shard,
        chunk_bytes: usize,
        sender: NodeId,
        term_of: impl FnOnce(u64) -> Result<u64>,
    ) -> Result<SnapshotDescriptor> {
        let tmp = self.out_dir.join(format!("{}-export.tmp", shard.id()));
        let written = self.write_export(&tmp, shard, chunk_bytes);
        let (summary, chunks) = match written {
            Ok(w) => w,
            Err(e) => {
                remove(&tmp);
                return Err(e);
            }
        };
        let term = match term_of(summary.applied_index) {
            Ok(t) => t,
            Err(e) => {
                remove(&tmp);
                return Err(e);
            }
        };
        let descriptor = SnapshotDescriptor {
            key: SnapshotKey {
                group: shard.id(),
                index: summary.applied_index,
                term,
            },
            sender,
            root: summary.root,
            chunks,
        };
        let total = descriptor.total_bytes();
        if total > self.max_bytes {
            remove(&tmp);
            return Err(ReplicationError::SnapshotTooLarge {
                bytes: total,
                limit: self.max_bytes,
            });
        }
        let key = descriptor.key;
        let chunks_path = self.out_path(&key, "chunks");
        fs::rename(&tmp, &chunks_path).map_err(|e| io_err("cannot rename", &tmp, e))?;
        write_synced(&self.out_path(&key, "desc"), &descriptor.encode())?;
        sync_dir(&self.out_dir)?;
        // Older exports of the group: a fetch of one fails cleanly and raft
        // sends the newer one.
        let prefix = format!("{}-", key.group);
        for path in list(&self.out_dir)? {
            let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&prefix) && name != key.file_stem() {
                remove(&path);
            }
        }
        self.served
            .lock()
            .retain(|k, _| k.group != key.group || *k == key);
        Ok(descriptor)
    }

    fn write_export(
        &self,
        tmp: &Path,
        shard: &Shard,
        chunk_bytes: usize,
    ) -> Result<(stratosdb_engine::SnapshotSummary, Vec<ChunkInfo>)> {
        let file = File::create(tmp).map_err(|e| io_err("cannot create", tmp, e))?;
        let mut out = BufWriter::new(file);
        let mut chunks = Vec::new();
        let mut failure = None;
        let summary = shard.export_snapshot(chunk_bytes, |chunk| {
            if failure.is_none() {
                match ChunkInfo::of(&chunk) {
                    Ok(info) => chunks.push(info),
                    Err(e) => failure = Some(e),
                }
                if let Err(e) = out.write_all(&chunk) {
                    failure = Some(io_err("cannot write", tmp, e));
                }
            }
            Ok(())
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        if chunks.len() > super::MAX_SNAPSHOT_CHUNKS {
            return Err(ReplicationError::SnapshotTooLarge {
                bytes: chunks.len() as u64,
                limit: super::MAX_SNAPSHOT_CHUNKS as u64,
            });
        }
        let file = out
            .into_inner()
            .map_err(|e| io_err("cannot write", tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_err("cannot sync", tmp, e))?;
        Ok((summary, chunks))
    }

    /// Whether this node still has the export `key`.
    pub fn has_outgoing(&self, key: &SnapshotKey) -> bool {
        self.out_path(key, "desc").exists()
    }

    fn outgoing_descriptor(&self, key: &SnapshotKey) -> Result<Arc<SnapshotDescriptor>> {
        if let Some(d) = self.served.lock().get(key) {
            return Ok(d.clone());
        }
        let path = self.out_path(key, "desc");
        let bytes = fs::read(&path).map_err(|_| ReplicationError::SnapshotNotFound {
            group: key.group,
            index: key.index,
            term: key.term,
        })?;
        let d = Arc::new(SnapshotDescriptor::decode(&bytes, u64::MAX)?);
        self.served.lock().insert(*key, d.clone());
        Ok(d)
    }

    /// Chunk `n` of the export `key`, read from disk, and the bytes of the
    /// snapshot up to its end; `SnapshotNotFound` if the export is gone
    /// (replaced or expired). Keeps the export from expiring while it is
    /// being fetched.
    pub fn read_outgoing_chunk(&self, key: &SnapshotKey, n: u32) -> Result<(Vec<u8>, u64)> {
        let descriptor = self.outgoing_descriptor(key)?;
        let info = descriptor.chunks.get(n as usize).ok_or_else(|| {
            ReplicationError::Malformed(format!(
                "chunk {n} asked of a snapshot of {} chunks",
                descriptor.chunks.len()
            ))
        })?;
        let path = self.out_path(key, "chunks");
        let not_found = |_| ReplicationError::SnapshotNotFound {
            group: key.group,
            index: key.index,
            term: key.term,
        };
        let mut file = File::open(&path).map_err(not_found)?;
        file.seek(SeekFrom::Start(descriptor.offset_of(n)))
            .map_err(|e| io_err("cannot seek", &path, e))?;
        let mut chunk = vec![0u8; info.len as usize];
        file.read_exact(&mut chunk)
            .map_err(|e| io_err("cannot read", &path, e))?;
        if let Ok(desc) = OpenOptions::new()
            .write(true)
            .open(self.out_path(key, "desc"))
        {
            let _ = desc.set_modified(SystemTime::now());
        }
        Ok((chunk, descriptor.offset_of(n) + u64::from(info.len)))
    }

    // ---- incoming ---------------------------------------------------------

    fn in_path(&self, key: &SnapshotKey, ext: &str) -> PathBuf {
        self.in_dir.join(format!("{}.{ext}", key.file_stem()))
    }

    /// Whether every chunk of `key` is here, verified.
    pub fn is_complete(&self, key: &SnapshotKey) -> bool {
        self.in_path(key, "chunks").exists()
    }

    /// Starts (or resumes) receiving a snapshot: drops the group's other
    /// incoming snapshots, refuses one that would put the incoming total over
    /// the limit, and keeps the chunks already received that verify (each at
    /// its place in the file: chunks may arrive out of order).
    pub fn begin_incoming(&self, descriptor: &SnapshotDescriptor) -> Result<IncomingFile> {
        let key = descriptor.key;
        let prefix = format!("{}-", key.group);
        let mut others = 0u64;
        for path in list(&self.in_dir)? {
            let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("");
            if name == key.file_stem() {
                continue;
            }
            if name.starts_with(&prefix) {
                remove(&path);
            } else {
                others += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            }
        }
        let total = descriptor.total_bytes();
        if others.saturating_add(total) > self.max_bytes {
            return Err(ReplicationError::SnapshotTooLarge {
                bytes: others.saturating_add(total),
                limit: self.max_bytes,
            });
        }
        let desc_path = self.in_path(&key, "desc");
        if !desc_path.exists() {
            write_synced(&desc_path, &descriptor.encode())?;
        }
        let part = self.in_path(&key, "part");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| io_err("cannot open", &part, e))?;
        // Resume with the chunks that verify, wherever they are; the others
        // (never written, torn by a crash, or lost with the page cache) are
        // fetched again.
        let on_disk = file
            .metadata()
            .map_err(|e| io_err("cannot read", &part, e))?
            .len();
        let mut have = vec![false; descriptor.chunks.len()];
        let mut bytes = 0u64;
        {
            let mut reader = BufReader::with_capacity(1 << 20, &mut file);
            let mut buf = Vec::new();
            let mut offset = 0u64;
            for (n, info) in descriptor.chunks.iter().enumerate() {
                let end = offset + u64::from(info.len);
                if end > on_disk {
                    break;
                }
                buf.resize(info.len as usize, 0);
                if reader.read_exact(&mut buf).is_err() {
                    break;
                }
                if info.matches(&buf) {
                    have[n] = true;
                    bytes += u64::from(info.len);
                }
                offset = end;
            }
        }
        // The file has the snapshot's size from the start (holes where chunks
        // are missing), so a chunk is written at its offset in any order.
        file.set_len(total)
            .map_err(|e| io_err("cannot size", &part, e))?;
        Ok(IncomingFile {
            file,
            descriptor: descriptor.clone(),
            have,
            bytes,
            part,
            done: self.in_path(&key, "chunks"),
            dir: self.in_dir.clone(),
        })
    }

    /// Whether the complete incoming snapshot `key` is imported beside its
    /// shard already.
    pub fn is_prepared(&self, key: &SnapshotKey) -> bool {
        self.prepared
            .lock()
            .get(&key.group)
            .is_some_and(|(k, _)| k == key)
    }

    /// Imports the complete incoming snapshot beside `shard` (each chunk
    /// verified again as it is read; the engine checks the root), off the
    /// node's loop: [`SnapshotFiles::install_incoming`] then only switches it
    /// in. Replaces the group's earlier preparation, if any.
    pub fn prepare_incoming(&self, descriptor: &SnapshotDescriptor, shard: &Shard) -> Result<()> {
        let key = descriptor.key;
        self.prepared.lock().remove(&key.group);
        let prepared = self.read_incoming(descriptor, |chunks| {
            shard.prepare_import(chunks).map_err(ReplicationError::from)
        })?;
        check_summary(prepared.summary(), descriptor)?;
        // Kept only if the snapshot was not installed (or dropped) meanwhile:
        // its removal holds the same lock.
        let mut map = self.prepared.lock();
        if self.is_complete(&key) {
            map.insert(key.group, (key, prepared));
        }
        Ok(())
    }

    /// Installs the complete incoming snapshot into the shard, then removes
    /// its files: switches in what [`SnapshotFiles::prepare_incoming`]
    /// prepared, else imports it now (each chunk verified again as it is
    /// read). The applied index and root are checked before the switch.
    pub fn install_incoming(&self, descriptor: &SnapshotDescriptor, shard: &Shard) -> Result<()> {
        let key = descriptor.key;
        let ready = match self.prepared.lock().remove(&key.group) {
            Some((k, p)) if k == key && p.shard_id() == shard.id() => Some(p),
            _ => None,
        };
        let prepared = match ready {
            Some(p) => p,
            None => self.read_incoming(descriptor, |chunks| {
                shard.prepare_import(chunks).map_err(ReplicationError::from)
            })?,
        };
        check_summary(prepared.summary(), descriptor)?;
        shard.commit_import(prepared)?;
        self.remove_incoming(&key);
        Ok(())
    }

    /// Runs `import` over the chunks of the complete incoming snapshot, each
    /// verified as it is read.
    fn read_incoming<T>(
        &self,
        descriptor: &SnapshotDescriptor,
        import: impl FnOnce(&mut dyn Iterator<Item = Vec<u8>>) -> Result<T>,
    ) -> Result<T> {
        let key = descriptor.key;
        let path = self.in_path(&key, "chunks");
        let file = File::open(&path).map_err(|e| io_err("cannot open", &path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let failure: std::cell::RefCell<Option<ReplicationError>> = Default::default();
        let mut chunks = descriptor.chunks.iter().enumerate().map_while(|(n, info)| {
            let mut chunk = vec![0u8; info.len as usize];
            let read = reader.read_exact(&mut chunk);
            if let Err(e) = read {
                *failure.borrow_mut() = Some(io_err("cannot read", &path, e));
                return None;
            }
            if !info.matches(&chunk) {
                *failure.borrow_mut() = Some(ReplicationError::SnapshotCorrupt(format!(
                    "chunk {n} of {} changed on disk",
                    path.display()
                )));
                return None;
            }
            Some(chunk)
        });
        let imported = import(&mut chunks);
        drop(chunks);
        // A chunk that could not be read explains the engine's refusal.
        if let Some(e) = failure.into_inner() {
            return Err(e);
        }
        imported
    }

    /// Forgets an incoming snapshot (installed, or not wanted any more).
    pub fn remove_incoming(&self, key: &SnapshotKey) {
        // Held while the files go, so a preparation finishing meanwhile is
        // not kept for a snapshot that is gone.
        let mut prepared = self.prepared.lock();
        if prepared.get(&key.group).is_some_and(|(k, _)| k == key) {
            prepared.remove(&key.group);
        }
        for ext in ["part", "chunks", "desc"] {
            let path = self.in_path(key, ext);
            if path.exists() {
                remove(&path);
            }
        }
    }

    /// Removes every snapshot file of `group`, both ways (its replica here
    /// is being deleted).
    pub fn remove_group(&self, group: GroupId) {
        let prefix = format!("{group}-");
        for d in [&self.out_dir, &self.in_dir] {
            for path in list(d).unwrap_or_default() {
                let ours = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix));
                if ours {
                    remove(&path);
                }
            }
        }
        self.served.lock().retain(|k, _| k.group != group);
        self.prepared.lock().remove(&group);
    }

    /// Bytes of incoming snapshot files on disk.
    pub fn incoming_bytes(&self) -> u64 {
        list(&self.in_dir)
            .unwrap_or_default()
            .iter()
            .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// A snapshot being received: each chunk verified, then written at its
/// offset (in any order). Nothing is synced until [`IncomingFile::finish`].
pub struct IncomingFile {
    file: File,
    descriptor: SnapshotDescriptor,
    /// Chunks received and verified.
    have: Vec<bool>,
    bytes: u64,
    part: PathBuf,
    done: PathBuf,
    dir: PathBuf,
}

impl IncomingFile {
    /// The first chunk not yet received and verified (the count of chunks
    /// when all are in).
    pub fn next_chunk(&self) -> u32 {
        self.missing().next().unwrap_or(self.have.len() as u32)
    }

    /// The chunks not yet received, in order.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.have.len() as u32).filter(|&n| !self.have[n as usize])
    }

    /// Whether chunk `n` is received and verified.
    pub fn has(&self, n: u32) -> bool {
        self.have.get(n as usize).copied().unwrap_or(false)
    }

    /// Chunks received and verified.
    pub fn chunks_done(&self) -> u32 {
        self.have.iter().filter(|&&h| h).count() as u32
    }

    /// Bytes received and verified.
    pub fn bytes_done(&self) -> u64 {
        self.bytes
    }

    pub fn is_full(&self) -> bool {
        self.have.iter().all(|&h| h)
    }

    /// Writes chunk `n` at its place if it is what the descriptor announces
    /// (a chunk already here is left alone).
    ///
    /// Not synced here: a chunk is checked against its SHA-256 again when a
    /// transfer resumes (after a crash a lost or torn chunk just does not
    /// verify and is fetched again) and when the snapshot is installed, and
    /// [`IncomingFile::finish`] syncs the file once before it is marked
    /// complete. A sync per chunk bought nothing but a wait per chunk.
    pub fn put(&mut self, n: u32, bytes: &[u8]) -> Result<()> {
        let info = self.descriptor.chunks.get(n as usize).ok_or_else(|| {
            ReplicationError::SnapshotCorrupt(format!("chunk {n} is past the snapshot's end"))
        })?;
        if !info.matches(bytes) {
            return Err(ReplicationError::SnapshotCorrupt(format!(
                "chunk {n} of {} bytes does not match its descriptor",
                bytes.len()
            )));
        }
        if self.has(n) {
            return Ok(());
        }
        let offset = self.descriptor.offset_of(n);
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.write_all(bytes))
            .map_err(|e| io_err("cannot write", &self.part, e))?;
        self.have[n as usize] = true;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Marks the snapshot complete (every chunk in, now synced): `.part`
    /// becomes `.chunks`.
    pub fn finish(self) -> Result<()> {
        if !self.is_full() {
            return Err(ReplicationError::SnapshotCorrupt(format!(
                "{} is missing chunks",
                self.part.display()
            )));
        }
        self.file
            .sync_all()
            .map_err(|e| io_err("cannot sync", &self.part, e))?;
        fs::rename(&self.part, &self.done).map_err(|e| io_err("cannot rename", &self.part, e))?;
        sync_dir(&self.dir)
    }
}

/// An import stands where its descriptor says: at the snapshot's index, with
/// its root.
fn check_summary(
    summary: &stratosdb_engine::SnapshotSummary,
    descriptor: &SnapshotDescriptor,
) -> Result<()> {
    let index = descriptor.key.index;
    if summary.applied_index != index {
        return Err(ReplicationError::SnapshotCorrupt(format!(
            "snapshot data stands at index {}, its metadata says {index}",
            summary.applied_index
        )));
    }
    if summary.root != descriptor.root {
        return Err(ReplicationError::SnapshotCorrupt(
            "the imported root differs from the descriptor's".into(),
        ));
    }
    Ok(())
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| io_err("cannot list", dir, e))?;
    Ok(entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
}

fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a snapshot file");
    }
}

/// Writes a small file durably: a temporary, synced, renamed into place.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| io_err("cannot create", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("cannot write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err("cannot rename", &tmp, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("cannot sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratosdb_engine::{Engine, Value};

    fn shard_with(docs: usize) -> (Engine, Shard) {
        let engine = Engine::open_temporary().unwrap();
        let shard = engine.shard(3).unwrap();
        shard.create_collection("c").unwrap();
        for i in 0..docs {
            let doc = format!(r#"{{"_id":"d{i:04}","pad":"{}"}}"#, "x".repeat(200));
            shard
                .insert("c", Value::from_json_str(&doc).unwrap())
                .unwrap();
        }
        (engine, shard)
    }

    /// Snapshot files in a new folder, with an export of a shard of `docs`
    /// documents in chunks of about 1 KiB.
    fn exported(
        docs: usize,
    ) -> (
        tempfile::TempDir,
        Arc<SnapshotFiles>,
        Engine,
        Shard,
        SnapshotDescriptor,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path(), Duration::from_secs(600), 1 << 30).unwrap();
        let (engine, shard) = shard_with(docs);
        let d = files.export(&shard, 1024, 1, |_| Ok(4)).unwrap();
        (dir, files, engine, shard, d)
    }

    #[test]
    fn an_incoming_snapshot_resumes_with_the_chunks_that_verify_in_any_order() {
        let (dir, files, _engine, shard, d) = exported(100);
        assert!(d.chunks.len() > 10, "{} chunks", d.chunks.len());
        let chunk = |n: u32| files.read_outgoing_chunk(&d.key, n).unwrap().0;

        let mut incoming = files.begin_incoming(&d).unwrap();
        assert_eq!(incoming.next_chunk(), 0);
        // Chunks 0-4 and 7 arrive (out of order, as from several fetches in
        // flight); a chunk at the wrong number (or corrupt) is refused.
        for n in [1, 0, 7, 2, 4, 3] {
            incoming.put(n, &chunk(n)).unwrap();
        }
        assert!(incoming.put(8, &chunk(9)).is_err());
        assert!(!incoming.has(8));
        drop(incoming);

        // Reopened (as after a restart): it has 0-4 and 7, nothing else.
        let files = SnapshotFiles::open(dir.path(), Duration::from_secs(600), 1 << 30).unwrap();
        let incoming = files.begin_incoming(&d).unwrap();
        assert_eq!(incoming.next_chunk(), 5);
        assert_eq!(incoming.chunks_done(), 6);
        assert_eq!(
            incoming.bytes_done(),
            d.offset_of(5) + u64::from(d.chunks[7].len)
        );
        assert_eq!(
            incoming.missing().take(3).collect::<Vec<_>>(),
            vec![5, 6, 8]
        );
        drop(incoming);

        // A torn chunk (half of 7 overwritten before a crash) is fetched again.
        let part = files.in_path(&d.key, "part");
        let mut f = OpenOptions::new().write(true).open(&part).unwrap();
        f.seek(SeekFrom::Start(d.offset_of(7))).unwrap();
        f.write_all(&vec![0u8; d.chunks[7].len as usize / 2])
            .unwrap();
        drop(f);
        let mut incoming = files.begin_incoming(&d).unwrap();
        assert_eq!(incoming.chunks_done(), 5);
        assert!(!incoming.has(7));
        let missing: Vec<u32> = incoming.missing().collect();
        for n in missing {
            incoming.put(n, &chunk(n)).unwrap();
        }
        assert!(incoming.is_full());
        incoming.finish().unwrap();
        assert!(files.is_complete(&d.key));

        let target_engine = Engine::open_temporary().unwrap();
        let target = target_engine.shard(3).unwrap();
        files.install_incoming(&d, &target).unwrap();
        assert_eq!(target.root().unwrap(), shard.root().unwrap());
        assert!(!files.is_complete(&d.key), "installed files are removed");
    }

    #[test]
    fn an_incomplete_snapshot_is_not_marked_complete() {
        let (_dir, files, _engine, _shard, d) = exported(20);
        let mut incoming = files.begin_incoming(&d).unwrap();
        incoming
            .put(0, &files.read_outgoing_chunk(&d.key, 0).unwrap().0)
            .unwrap();
        assert!(incoming.finish().is_err());
        assert!(!files.is_complete(&d.key));
    }

    #[test]
    fn a_newer_export_replaces_the_older_and_the_older_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path(), Duration::from_secs(600), 1 << 30).unwrap();
        let (_engine, shard) = shard_with(10);
        let old = files.export(&shard, 1024, 1, |_| Ok(1)).unwrap();
        let new = files.export(&shard, 1024, 1, |_| Ok(2)).unwrap();
        assert!(files.has_outgoing(&new.key));
        assert!(!files.has_outgoing(&old.key));
        assert!(matches!(
            files.read_outgoing_chunk(&old.key, 0),
            Err(ReplicationError::SnapshotNotFound { .. })
        ));
    }

    #[test]
    fn limits_refuse_snapshots_over_the_disk_budget() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path(), Duration::from_secs(600), 2000).unwrap();
        let (_engine, shard) = shard_with(100);
        assert!(matches!(
            files.export(&shard, 1024, 1, |_| Ok(1)),
            Err(ReplicationError::SnapshotTooLarge { .. })
        ));
        let big = SnapshotDescriptor {
            key: SnapshotKey {
                group: 1,
                index: 5,
                term: 1,
            },
            sender: 2,
            root: [0; 32],
            chunks: vec![ChunkInfo::of(&[1; 3000]).unwrap()],
        };
        assert!(matches!(
            files.begin_incoming(&big),
            Err(ReplicationError::SnapshotTooLarge { .. })
        ));
    }

    #[test]
    fn expired_files_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path(), Duration::from_secs(600), 1 << 30).unwrap();
        let (_engine, shard) = shard_with(10);
        let d = files.export(&shard, 1024, 1, |_| Ok(1)).unwrap();
        drop(files);
        std::thread::sleep(Duration::from_millis(50));
        let files = SnapshotFiles::open(dir.path(), Duration::from_millis(10), 1 << 30).unwrap();
        assert!(!files.has_outgoing(&d.key));
    }
}
