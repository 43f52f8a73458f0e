//! What the CLI's integration tests share.

use std::path::{Path, PathBuf};

use layerzero_data::{fetch, Dataset, Location, Source};

/// The real CIFAR-10 from `$LAYERZERO_CIFAR10_ARCHIVE`, extracted once into the target folder,
/// or `None` with the reason printed.
pub fn real_data() -> Option<PathBuf> {
    let Some(archive) = std::env::var_os("LAYERZERO_CIFAR10_ARCHIVE").filter(|p| !p.is_empty())
    else {
        eprintln!("skipped: set LAYERZERO_CIFAR10_ARCHIVE to a CIFAR-10 binary .tar.gz");
        return None;
    };
    let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cifar10");
    let src = Source::new(Dataset::Cifar10).with_location(Location::Archive(archive.into()));
    Some(fetch(&dest, &src).unwrap().dir().to_path_buf())
}
