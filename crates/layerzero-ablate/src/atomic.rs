//! Atomic file writes: a reader sees either the old file or the complete new one, never a
//! partial write, even if the writer is killed (e.g. a pre-empted Slurm or Kubernetes job).

use std::fs;
use std::path::{Path, PathBuf};

use layerzero_models::atomic::{folder_of, sync_folder, temporary_for, write_synced};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically.
///
/// The bytes go to `NAME.tmp-<pid>` in the same directory, which is flushed to disk
/// (`fsync`) and then renamed over `path`; finally the directory itself is fsynced (on Unix)
/// so the rename is durable. On failure the temporary file is removed and the error names
/// the file involved. The parent directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_all(&[(path, bytes)])
}

/// Writes several files that belong together (a results JSON and its CSV): every file's bytes
/// go to a flushed temporary first, and only when all of them are written are they renamed into
/// place, one after the other. A failed or killed write (a full disk, a pre-empted job) thus
/// leaves every old file as it was; only a kill between two renames, which do no I/O, can
/// leave a mix.
pub fn write_atomic_all(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut temps: Vec<(PathBuf, &Path, &Path)> = Vec::with_capacity(files.len());
    for &(path, _) in files {
        let tmp = temporary_for(path).ok_or_else(|| {
            Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the path has no file name to write",
                ),
            )
        })?;
        temps.push((tmp, path, folder_of(path)));
    }
    let written = files
        .iter()
        .zip(&temps)
        .try_for_each(|(&(_, bytes), (tmp, _, _))| {
            write_synced(tmp, bytes).map_err(|e| Error::io(tmp, e))
        });
    if written.is_err() {
        for (tmp, _, _) in &temps {
            // Best effort: a temporary file may not even exist.
            let _ = fs::remove_file(tmp);
        }
        return written;
    }
    for (i, (tmp, path, _)) in temps.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, path) {
            for (tmp, _, _) in &temps[i..] {
                let _ = fs::remove_file(tmp);
            }
            return Err(Error::io(path, e));
        }
    }
    for (_, _, dir) in &temps {
        sync_folder(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_pair_write_keeps_both_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("results.json");
        let csv = dir.path().join("results.csv");
        write_atomic_all(&[(&json, b"old json"), (&csv, b"old csv")]).unwrap();
        // The second file's folder does not exist: its write fails after the first's succeeded.
        let missing = dir.path().join("no-such-folder").join("results.csv");
        let e = write_atomic_all(&[(&json, b"new json"), (&missing, b"new csv")]).unwrap_err();
        assert!(e.to_string().contains("no-such-folder"), "{e}");
        assert_eq!(fs::read(&json).unwrap(), b"old json");
        assert_eq!(fs::read(&csv).unwrap(), b"old csv");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["results.csv", "results.json"]);
        write_atomic_all(&[(&json, b"new json"), (&csv, b"new csv")]).unwrap();
        assert_eq!(fs::read(&json).unwrap(), b"new json");
        assert_eq!(fs::read(&csv).unwrap(), b"new csv");
    }

    #[test]
    fn writes_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("results.json")]);
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("results.json");
        let err = write_atomic(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("results.json.tmp-"), "{err}");
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
