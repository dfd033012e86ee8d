//! The node's identity: an ed25519 key kept in the data folder, and the
//! mapping from its PeerId to the replication crate's `NodeId`.

use std::io::Write as _;
use std::path::Path;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use sha2::{Digest as _, Sha256};

use crate::{NodeId, ReplicationError, Result};

/// The key file's name inside the node's folder.
pub const KEY_FILE: &str = "node.key";

/// Loads the node key from `dir/node.key`, or creates it (ed25519, file mode
/// 0600, written to a temporary file and renamed into place) on first start.
/// The file holds libp2p's protobuf encoding of the keypair.
pub fn load_or_create_key(dir: &Path) -> Result<Keypair> {
    let path = dir.join(KEY_FILE);
    let fail = |what: &str, e: &dyn std::fmt::Display| ReplicationError::Identity {
        path: path.display().to_string(),
        reason: format!("{what}: {e}"),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            return Keypair::from_protobuf_encoding(&bytes).map_err(|e| fail("decode", &e));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail("read", &e)),
    }
    std::fs::create_dir_all(dir).map_err(|e| fail("create folder", &e))?;
    let key = Keypair::generate_ed25519();
    let bytes = key.to_protobuf_encoding().map_err(|e| fail("encode", &e))?;
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| fail("create", &e))?;
    file.write_all(&bytes).map_err(|e| fail("write", &e))?;
    file.sync_all().map_err(|e| fail("sync", &e))?;
    std::fs::rename(&tmp, &path).map_err(|e| fail("rename", &e))?;
    Ok(key)
}

/// The 32 secret bytes of the node key in `dir` (created as
/// [`load_or_create_key`] does), for what else the node signs with its
/// network identity (its local ledger blocks).
pub fn node_secret_key(dir: &Path) -> Result<[u8; 32]> {
    let key = load_or_create_key(dir)?;
    let ed = key
        .try_into_ed25519()
        .map_err(|e| ReplicationError::Identity {
            path: dir.join(KEY_FILE).display().to_string(),
            reason: format!("not an ed25519 key: {e}"),
        })?;
    let mut secret = [0u8; 32];
    secret.copy_from_slice(ed.secret().as_ref());
    Ok(secret)
}

/// The ed25519 public key a PeerId carries (an ed25519 PeerId is the
/// identity multihash of its protobuf-encoded key): the key a node signs its
/// receipts and ledger blocks with. `None` for any other kind of PeerId.
pub fn ed25519_key_of(peer: &PeerId) -> Option<[u8; 32]> {
    let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(key.try_into_ed25519().ok()?.to_bytes())
}

/// The replication `NodeId` of a peer: the first 8 bytes (big-endian) of
/// SHA-256 over the PeerId's bytes (its multihash). 0 is raft's "no node",
/// so a hash of 0 maps to 1. Stable across restarts and machines, and needs
/// no coordination; collisions (2^-64 per pair) are refused when a member
/// is added ([`super::P2pTransport::allow_peer`]).
pub fn node_id_of(peer: &PeerId) -> NodeId {
    let digest = Sha256::digest(peer.to_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_survives_a_reopen_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_key(dir.path()).unwrap();
        let b = load_or_create_key(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        let key = Keypair::generate_ed25519();
        let ed = key.clone().try_into_ed25519().unwrap();
        assert_eq!(
            ed25519_key_of(&key.public().to_peer_id()),
            Some(ed.public().to_bytes())
        );
        let a = Keypair::generate_ed25519().public().to_peer_id();
        let b = Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(node_id_of(&a), node_id_of(&a));
        assert_ne!(node_id_of(&a), node_id_of(&b));
        assert_ne!(node_id_of(&a), 0);
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        assert!(matches!(
            load_or_create_key(dir.path()),
            Err(ReplicationError::Identity { .. })
        ));
    }
}
