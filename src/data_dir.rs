//! `DATA_DIR`: the node's private directory (its id, the embedded store and queue). It holds job
//! definitions with their env values, so only the node's user may read it: the directory is
//! 0700 and its files 0600. A directory left wider by an older version, or made by hand, is
//! tightened at start, with a log line saying so.

use anyhow::Context;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (0700) or tightens an existing one, and tightens the files already in it.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("could not create DATA_DIR {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    // A shared directory such as /tmp (sticky bit) is not ours to close.
    if mode & 0o1000 != 0 {
        anyhow::bail!(
            "DATA_DIR {} is a shared directory (sticky bit): use a directory of its own",
            dir.display()
        );
    }
    tighten(dir, DIR_MODE)?;
    tighten_files(dir)
}

/// Sets every regular file directly in `dir` to 0600 (SQLite's `-wal` and `-shm` files take the
/// database file's mode, but a file made by another version may not).
pub fn tighten_files(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            tighten(&entry.path(), FILE_MODE)?;
        }
    }
    Ok(())
}

/// Removes from `path` every permission `wanted` does not have.
fn tighten(path: &Path, wanted: u32) -> anyhow::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode & !wanted != 0 {
        std::fs::set_permissions(path, Permissions::from_mode(mode & wanted))
            .with_context(|| format!("could not restrict the mode of {}", path.display()))?;
        tracing::warn!(
            path = %path.display(),
            was = format!("{mode:o}"),
            now = format!("{:o}", mode & wanted),
            "data directory permissions tightened"
        );
    }
    Ok(())
}

/// Creates `path` with mode 0600 if it does not exist (so that SQLite, which gives its journal
/// files the database's mode, never makes a readable one).
pub fn create_private_file(path: &Path) -> anyhow::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    Ok(())
}

/// Writes `contents` to a new or truncated `path` with mode 0600.
pub fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .with_context(|| format!("could not write {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("could not write {}", path.display()))
}

/// The name of the lock file in `DATA_DIR`.
pub const LOCK_FILE: &str = "lock";

/// Takes the exclusive lock of `dir` (an `flock` on `DATA_DIR/lock`), held as long as the
/// returned file is open: two nodes in one directory would share its node id and embedded
/// database and release each other's leases. The kernel drops the lock when the process ends,
/// however it ends, so a crashed node never leaves a stale lock behind.
pub fn lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(&path)
        .with_context(|| format!("could not open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "DATA_DIR {} is in use by another fastlane-node process (it holds {}): \
             run one node per data directory",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("could not lock {}", path.display()))
        }
    }
}
