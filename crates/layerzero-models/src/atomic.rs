//! The pieces of layerzero's atomic file writes: write the bytes to a temporary beside the
//! final name, flush it, rename it into place, flush the folder. Weights files
//! ([`crate::save_safetensors`]), the training crate's `write_atomic` (checkpoints, run files)
//! and the ablation crate's (results, reports) are built from them, so that every temporary
//! has the one name a training run knows how to clean up after a kill ([`is_temporary`]).
//!
//! They live here, in the lowest crate that writes files, because the two crates above both
//! depend on it; each maps the `io::Error` into its own error type, naming the file involved.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary an atomic write of `path` uses: `NAME.tmp-<pid>` in the same folder (a
/// rename stays within one file system). `None` when `path` has no file name.
pub fn temporary_for(path: &Path) -> Option<PathBuf> {
    let mut name = path.file_name()?.to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    Some(path.with_file_name(name))
}

/// Whether `name` is a file name [`temporary_for`] gives (`NAME.tmp-<digits>`), or
/// `{init,weights}.safetensors.tmp<digits>`, the form weights files' temporaries had before.
/// A killed writer leaves such a file behind; it can never be renamed into place.
pub fn is_temporary(name: &str) -> bool {
    let Some(at) = name.rfind(".tmp") else {
        return false;
    };
    let (stem, tail) = (&name[..at], &name[at + ".tmp".len()..]);
    let digits = match tail.strip_prefix('-') {
        Some(d) => d,
        None if matches!(stem, "init.safetensors" | "weights.safetensors") => tail,
        None => return false,
    };
    !stem.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The folder `path` lies in (`.` for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Creates `path` (truncating it), writes `bytes` and flushes them to disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes a folder's entries (a rename into it) to disk.
///
/// Some file systems cannot fsync a folder and say so with `EINVAL` (`InvalidInput`); that
/// one error is ignored, since there is nothing more to flush there. Any other error (opening
/// the folder, an I/O error from the fsync) is returned: the rename may not survive a crash.
#[cfg(unix)]
pub fn sync_folder(dir: &Path) -> std::io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.kind() != std::io::ErrorKind::InvalidInput => Err(e),
        _ => Ok(()),
    }
}

/// Folders cannot be opened for fsync on this platform; the rename is still atomic.
#[cfg(not(unix))]
pub fn sync_folder(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_are_recognised_by_their_name_only() {
        let tmp = temporary_for(Path::new("runs/r/weights.safetensors")).unwrap();
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            name,
            format!("weights.safetensors.tmp-{}", std::process::id())
        );
        assert_eq!(folder_of(&tmp), Path::new("runs/r"));
        assert_eq!(folder_of(Path::new("w.safetensors")), Path::new("."));
        assert!(is_temporary(name));
        for yes in ["metrics.jsonl.tmp-5583", "init.safetensors.tmp4242"] {
            assert!(is_temporary(yes), "{yes}");
        }
        for no in [
            "notes.tmp.txt",
            "keep.tmp-abc",
            "keep.tmp-12x",
            "keep.tmp-",
            "notes.tmp123",
            ".tmp-1",
        ] {
            assert!(!is_temporary(no), "{no}");
        }
        assert!(temporary_for(Path::new("/")).is_none());
    }
}
