//! The key file: one secp256k1 private key as 64 hex digits (`0x` optional,
//! surrounding whitespace ignored), readable by its owner alone.

use std::fs;
use std::io::Write;
use std::path::Path;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;

use crate::ChainError;

fn key_error(path: &Path, reason: impl Into<String>) -> ChainError {
    ChainError::KeyFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Reads the signing key from `path`. On unix the file must not be readable
/// or writable by group or others (mode 0600 or 0400). Errors say what is
/// wrong with the file, never what it holds.
pub fn load_key_file(path: &Path) -> Result<PrivateKeySigner, ChainError> {
    let meta = fs::metadata(path).map_err(|e| key_error(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(key_error(path, "not a regular file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_error(
                path,
                format!("mode {mode:04o} lets others read it; `chmod 600` it"),
            ));
        }
    }
    // A key file is 66 bytes or so; refuse to read anything large.
    if meta.len() > 1024 {
        return Err(key_error(path, "longer than a hex private key"));
    }
    let text = fs::read_to_string(path).map_err(|e| key_error(path, e.to_string()))?;
    let text = text.trim();
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(key_error(
            path,
            format!(
                "expected 64 hex digits (a secp256k1 private key), found {} characters",
                digits.len()
            ),
        ));
    }
    let bytes = hex::decode(digits).map_err(|_| key_error(path, "not hex"))?;
    PrivateKeySigner::from_slice(&bytes).map_err(|_| {
        key_error(
            path,
            "not a valid secp256k1 private key (zero or ≥ the curve order)",
        )
    })
}

/// Writes a new random private key to `path` (mode 0600; refuses to
/// overwrite an existing file) and returns its address.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("anchor.key");
/// let address = stratosdb_chain_anchor::stratos::generate_key_file(&path).unwrap();
/// let signer = stratosdb_chain_anchor::stratos::load_key_file(&path).unwrap();
/// assert_eq!(signer.address(), address);
/// ```
pub fn generate_key_file(path: &Path) -> Result<Address, ChainError> {
    let signer = PrivateKeySigner::random();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| key_error(path, e.to_string()))?;
    let text = format!("0x{}\n", hex::encode(signer.to_bytes()));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| key_error(path, e.to_string()))?;
    Ok(signer.address())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn write_with_mode(path: &Path, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn accepts_hex_with_or_without_prefix_and_refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        // anvil's first development key.
        let key = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let want: Address = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
            .parse()
            .unwrap();
        for text in [key.to_string(), format!("0x{key}\n"), format!("  {key}  ")] {
            write_with_mode(&path, &text, 0o600);
            assert_eq!(load_key_file(&path).unwrap().address(), want);
        }

        write_with_mode(&path, key, 0o644);
        let err = load_key_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains(key), "the key must never appear in an error");

        for bad in [
            "zz0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
            "0xac0974",
            "",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ] {
            write_with_mode(&path, bad, 0o600);
            let err = load_key_file(&path).unwrap_err().to_string();
            assert!(err.starts_with("key file "), "{err}");
            if bad.len() > 8 {
                assert!(!err.contains(bad), "{err}");
            }
        }
        let missing = load_key_file(&dir.path().join("absent")).unwrap_err();
        assert!(missing.to_string().contains("absent"), "{missing}");
    }

    #[cfg(unix)]
    #[test]
    fn generated_key_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let address = generate_key_file(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_key_file(&path).unwrap().address(), address);
        let before = fs::read(&path).unwrap();
        assert!(generate_key_file(&path).is_err());
        assert_eq!(fs::read(&path).unwrap(), before);
    }
}
