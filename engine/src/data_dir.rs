//! The data folder on disk: what makes a folder a stratosdb data folder, and
//! who holds it.
//!
//! - A folder is a stratosdb data folder if it holds the marker file
//!   [`MARKER`] (written when the engine creates the folder) or, for folders
//!   made before the marker existed, any of sled's own files (`conf`, `db`,
//!   `blobs`, `snap.*`). A missing or empty folder is made one. Any other
//!   non-empty folder is refused rather than filled.
//! - sled locks its `db` file while a process has the folder open. The
//!   process that holds it writes its pid to [`PID_FILE`], so that a second
//!   one is told which process to look for.

use std::path::{Path, PathBuf};

/// Written in a folder the engine creates.
pub const MARKER: &str = "STRATOSDB";
/// The pid of the process that last opened the folder.
pub const PID_FILE: &str = "stratosdb.pid";

const MARKER_TEXT: &str = "This folder holds a stratosdb database (sled files). Do not edit.\n";

/// Why a folder cannot be used as a data folder.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data folder {} is in use by another stratosdb process{}", dir.display(), pid_text(*pid))]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error(
        "{} is not a stratosdb data folder (it is not empty and holds no stratosdb files); choose a new or empty folder",
        dir.display()
    )]
    NotADataDir { dir: PathBuf },
    #[error("cannot use data folder {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl DataDirError {
    /// A stable, greppable code for the error kind.
    pub fn code(&self) -> &'static str {
        match self {
            DataDirError::InUse { .. } => "data_dir_in_use",
            DataDirError::NotADataDir { .. } => "not_a_data_dir",
            DataDirError::Io { .. } => "data_dir_io",
        }
    }
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// Before opening: creates `dir` (with its marker) if it is missing or
/// empty, accepts it if it is a data folder, refuses it otherwise.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    let io = |source| DataDirError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut empty = true;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let name = name.to_string_lossy();
        if is_ours(&name) {
            return Ok(());
        }
        empty = false;
    }
    if !empty {
        return Err(DataDirError::NotADataDir {
            dir: dir.to_path_buf(),
        });
    }
    std::fs::write(dir.join(MARKER), MARKER_TEXT).map_err(io)
}

/// A file name that only stratosdb (or the sled under it) puts in a folder.
fn is_ours(name: &str) -> bool {
    matches!(name, MARKER | PID_FILE | "conf" | "db" | "blobs") || name.starts_with("snap.")
}

/// After opening (the folder is locked now): records this process's pid.
/// Best effort: a folder where it cannot be written still works.
pub fn claim(dir: &Path) {
    let _ = std::fs::write(dir.join(PID_FILE), format!("{}\n", std::process::id()));
}

/// If `message` is sled's failure to lock the folder, the error that says
/// so, naming the process recorded in the pid file.
pub fn in_use(dir: &Path, message: &str) -> Option<DataDirError> {
    if !message.contains("could not acquire lock") {
        return None;
    }
    let pid = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Some(DataDirError::InUse {
        dir: dir.to_path_buf(),
        pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SledStore;

    #[test]
    fn new_and_empty_folders_are_made_data_folders() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("a/b");
        SledStore::open(&new, 1 << 20).unwrap();
        assert!(new.join(MARKER).exists());
        assert_eq!(
            std::fs::read_to_string(new.join(PID_FILE)).unwrap().trim(),
            std::process::id().to_string()
        );
        let empty = tempfile::tempdir().unwrap();
        SledStore::open(empty.path(), 1 << 20).unwrap();
        assert!(empty.path().join(MARKER).exists());
    }

    #[test]
    fn a_foreign_folder_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let err = SledStore::open(dir.path(), 1 << 20).err().unwrap();
        assert!(
            err.to_string().contains("is not a stratosdb data folder"),
            "{err}"
        );
        assert_eq!(err.code(), "not_a_data_dir");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["notes.txt"]);
    }

    #[test]
    fn folders_of_older_versions_open() {
        // An old folder: sled's files, no marker, no pid file.
        let dir = tempfile::tempdir().unwrap();
        drop(sled::Config::new().path(dir.path()).open().unwrap());
        assert!(!dir.path().join(MARKER).exists());
        SledStore::open(dir.path(), 1 << 20).unwrap();
    }

    #[test]
    fn a_held_folder_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = SledStore::open(dir.path(), 1 << 20).unwrap();
        // The same process cannot take sled's lock twice either.
        let err = SledStore::open(dir.path(), 1 << 20).err().unwrap();
        let expected = format!(
            "data folder {} is in use by another stratosdb process (pid {})",
            dir.path().display(),
            std::process::id()
        );
        assert_eq!(err.to_string(), expected);
        assert_eq!(err.code(), "data_dir_in_use");
    }
}
