//! Fetching CIFAR: download (or take a local archive), verify, extract, validate, move into place.
//!
//! Every step works beside the destination and is moved into place only once it is known good,
//! so an interrupted or failed run never leaves a data set that later loads:
//!
//! 1. download into `NAME.part`, hashing as the bytes arrive; rename to `NAME` only when the size
//!    and checksum are right;
//! 2. extract into a temporary folder beside the destination (refusing entries that would land
//!    outside it), check the expected files are there and that both splits load;
//! 3. rename the extracted folder into place, or, when the destination given is the data set's
//!    folder itself, remove its earlier (invalid) batch files and rename each extracted file
//!    into it.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::cifar::{resolve_dir, CifarSet, Dataset, Split};
use crate::error::{DataError, Result};

/// Environment variable naming a local CIFAR-10 `.tar.gz` to use instead of downloading.
pub const CIFAR10_ARCHIVE_ENV: &str = "LAYERZERO_CIFAR10_ARCHIVE";
/// Environment variable naming a local CIFAR-100 `.tar.gz` to use instead of downloading.
pub const CIFAR100_ARCHIVE_ENV: &str = "LAYERZERO_CIFAR100_ARCHIVE";

/// Facts about an official archive.
#[derive(Debug, Clone, Copy)]
pub struct OfficialArchive {
    /// Where the University of Toronto serves it.
    pub url: &'static str,
    /// Its file name.
    pub file_name: &'static str,
    /// Its MD5, as published on the CIFAR page.
    pub md5: &'static str,
}

impl Dataset {
    /// The official archive of this data set.
    pub fn official_archive(self) -> OfficialArchive {
        match self {
            Dataset::Cifar10 => OfficialArchive {
                url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                file_name: "cifar-10-binary.tar.gz",
                md5: "c32a1d4ab5d03f1284b67883e8d87530",
            },
            Dataset::Cifar100 => OfficialArchive {
                url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                file_name: "cifar-100-binary.tar.gz",
                md5: "03b5dce01913d631647c71ecec9e9cb8",
            },
        }
    }

    /// The environment variable that names a local archive of this data set.
    pub fn archive_env(self) -> &'static str {
        match self {
            Dataset::Cifar10 => CIFAR10_ARCHIVE_ENV,
            Dataset::Cifar100 => CIFAR100_ARCHIVE_ENV,
        }
    }
}

/// A checksum to verify an archive against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// Hex MD5 (what the CIFAR page publishes).
    Md5(String),
    /// Hex SHA-256.
    Sha256(String),
}

impl Checksum {
    /// A SHA-256 given by a user, checked to be 64 hex digits.
    pub fn sha256(hex_digest: &str) -> Result<Self> {
        let h = hex_digest.trim().to_ascii_lowercase();
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DataError::InvalidOption {
                what: "--sha256",
                expected: "64 hexadecimal digits",
                found: hex_digest.to_string(),
            });
        }
        Ok(Checksum::Sha256(h))
    }

    fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Md5(_) => "md5",
            Checksum::Sha256(_) => "sha256",
        }
    }

    fn expected(&self) -> &str {
        match self {
            Checksum::Md5(h) | Checksum::Sha256(h) => h,
        }
    }
}

/// Where the archive comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The official URL.
    Official,
    /// A mirror or any other URL.
    Url(String),
    /// A `.tar.gz` already on disk.
    Archive(PathBuf),
}

/// What to fetch and how to verify it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The data set.
    pub dataset: Dataset,
    /// Where from.
    pub location: Location,
    /// What to verify against. `None` means the default: the official MD5 for a download, and
    /// no archive checksum for a local archive (its contents are still fully validated).
    pub checksum: Option<Checksum>,
    /// Draw a progress bar on stderr. [`Source::new`] sets it when stderr is a terminal.
    pub progress: bool,
}

impl Source {
    /// The official archive of `dataset`, or the local archive named by its environment variable
    /// ([`Dataset::archive_env`]: `LAYERZERO_CIFAR10_ARCHIVE` or `LAYERZERO_CIFAR100_ARCHIVE`)
    /// when that is set.
    pub fn new(dataset: Dataset) -> Self {
        let location = match std::env::var_os(dataset.archive_env()) {
            Some(p) if !p.is_empty() => Location::Archive(PathBuf::from(p)),
            _ => Location::Official,
        };
        Source {
            dataset,
            location,
            checksum: None,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    /// Same data set, another location.
    pub fn with_location(mut self, location: Location) -> Self {
        self.location = location;
        self
    }

    /// Same data set, an explicit checksum.
    pub fn with_checksum(mut self, checksum: Option<Checksum>) -> Self {
        self.checksum = checksum;
        self
    }

    fn effective_checksum(&self) -> Option<Checksum> {
        match (&self.checksum, &self.location) {
            (Some(c), _) => Some(c.clone()),
            (None, Location::Archive(_)) => None,
            (None, _) => Some(Checksum::Md5(
                self.dataset.official_archive().md5.to_string(),
            )),
        }
    }
}

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// A valid data set was already there; nothing was downloaded.
    AlreadyPresent(PathBuf),
    /// The data set was fetched and extracted to this folder.
    Fetched(PathBuf),
}

impl FetchOutcome {
    /// The folder holding the batch files.
    pub fn dir(&self) -> &Path {
        match self {
            FetchOutcome::AlreadyPresent(p) | FetchOutcome::Fetched(p) => p,
        }
    }
}

/// Checks that an extracted data set is complete and valid (both splits load).
pub fn validate(dir: &Path, dataset: Dataset) -> Result<()> {
    for split in [Split::Train, Split::Test] {
        CifarSet::load(dir, dataset, split)?;
    }
    Ok(())
}

/// Fetches `source` into `dest`, leaving the batch files in `dest/cifar-10-batches-bin/` (or
/// `cifar-100-binary/`) when `dest` is the data root (e.g. `data/`), or in `dest` itself when
/// `dest` is the data set's folder (an existing data set there, or a folder of that name), as the
/// loaders ([`resolve_dir`]) accept either.
///
/// Idempotent: if that folder already holds a valid data set, returns at once without network
/// access. On any error, nothing new is left at `dest`.
pub fn fetch(dest: &Path, source: &Source) -> Result<FetchOutcome> {
    let dataset = source.dataset;
    let final_dir = install_dir(dest, dataset);
    if final_dir.is_dir() && validate(&final_dir, dataset).is_ok() {
        return Ok(FetchOutcome::AlreadyPresent(final_dir));
    }
    let created_dest = !dest.exists();
    fs::create_dir_all(dest).map_err(|e| DataError::io(dest, e))?;
    let result = fetch_into(dest, source, &final_dir);
    if result.is_err() && created_dest {
        // Leave no empty folder behind that we made ourselves.
        let _ = fs::remove_dir(dest);
    }
    result.map(|()| FetchOutcome::Fetched(final_dir))
}

/// The folder [`fetch`] checks and installs the batch files of `dataset` into, given `dest`:
/// the folder the loaders read ([`resolve_dir`]: `dest/cifar-10-batches-bin/` when that exists,
/// else `dest` itself when it holds the test batch), so that what is fetched is what they load.
/// When neither is there, `dest` itself if it is named like the data set's folder (an empty or
/// partial `cifar-10-batches-bin/`), else the nested folder.
fn install_dir(dest: &Path, dataset: Dataset) -> PathBuf {
    let resolved = resolve_dir(dest, dataset);
    if !resolved.is_dir() && dest.file_name() == Some(OsStr::new(dataset.folder_name())) {
        return dest.to_path_buf();
    }
    resolved
}

fn fetch_into(dest: &Path, source: &Source, final_dir: &Path) -> Result<()> {
    let dataset = source.dataset;
    let checksum = source.effective_checksum();
    let archive = match &source.location {
        Location::Archive(path) => {
            if !path.is_file() {
                return Err(DataError::MissingArchive {
                    path: path.clone(),
                    dataset: dataset.cli_name(),
                });
            }
            if let Some(c) = &checksum {
                verify_file(path, c)?;
            }
            path.clone()
        }
        Location::Official | Location::Url(_) => {
            let url = match &source.location {
                Location::Url(u) => u.as_str(),
                _ => dataset.official_archive().url,
            };
            let target = dest.join(dataset.official_archive().file_name);
            // A verified archive from an earlier, interrupted run is reused.
            let reusable = match &checksum {
                Some(c) => target.is_file() && verify_file(&target, c).is_ok(),
                None => false,
            };
            if !reusable {
                download(url, &target, checksum.as_ref(), source.progress)?;
            }
            target
        }
    };
    extract_and_install(&archive, dest, dataset, final_dir)
}

/// Streams `url` into `target.part`, verifies it, renames it to `target`.
fn download(url: &str, target: &Path, checksum: Option<&Checksum>, progress: bool) -> Result<()> {
    let part = part_path(target);
    let result = download_part(url, &part, checksum, progress);
    match result {
        Ok(()) => fs::rename(&part, target).map_err(|e| DataError::io(target, e)),
        Err(e) => {
            let _ = fs::remove_file(&part);
            Err(e)
        }
    }
}

fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    target.with_file_name(name)
}

fn download_part(
    url: &str,
    part: &Path,
    checksum: Option<&Checksum>,
    progress: bool,
) -> Result<()> {
    let http_err = |reason: String| DataError::Http {
        url: url.to_string(),
        reason,
    };
    let mut response = ureq::get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => http_err(format!("HTTP status {code}")),
        other => http_err(other.to_string()),
    })?;
    let announced: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let bar = progress_bar(announced, progress);
    let mut file = fs::File::create(part).map_err(|e| DataError::io(part, e))?;
    let mut hasher = Hasher::new(checksum);
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.finish_and_clear();
                // ureq reports a connection closed before Content-Length bytes as an I/O
                // error; say it in the user's terms.
                return Err(match announced {
                    Some(expected) => DataError::Truncated {
                        url: url.to_string(),
                        expected,
                        received,
                    },
                    None => http_err(format!("reading the body: {e}")),
                });
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| DataError::io(part, e))?;
        hasher.update(&buf[..n]);
        received += n as u64;
        bar.set_position(received);
    }
    bar.finish_and_clear();
    if let Some(expected) = announced {
        if received != expected {
            return Err(DataError::Truncated {
                url: url.to_string(),
                expected,
                received,
            });
        }
    }
    file.sync_all().map_err(|e| DataError::io(part, e))?;
    if let Some(c) = checksum {
        let found = hasher.finish();
        if found != c.expected() {
            return Err(DataError::ChecksumMismatch {
                path: part.to_path_buf(),
                algorithm: c.algorithm(),
                expected: c.expected().to_string(),
                found,
            });
        }
    }
    Ok(())
}

fn progress_bar(len: Option<u64>, visible: bool) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message("downloading");
    bar
}

enum Hasher {
    None,
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    fn new(checksum: Option<&Checksum>) -> Self {
        match checksum {
            None => Hasher::None,
            Some(Checksum::Md5(_)) => Hasher::Md5(Md5::new()),
            Some(Checksum::Sha256(_)) => Hasher::Sha256(Sha256::new()),
        }
    }
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::None => {}
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }
    fn finish(self) -> String {
        match self {
            Hasher::None => String::new(),
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

/// Verifies a file on disk against a checksum.
pub fn verify_file(path: &Path, checksum: &Checksum) -> Result<()> {
    let mut file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Hasher::new(Some(checksum));
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let found = hasher.finish();
    if found != checksum.expected() {
        return Err(DataError::ChecksumMismatch {
            path: path.to_path_buf(),
            algorithm: checksum.algorithm(),
            expected: checksum.expected().to_string(),
            found,
        });
    }
    Ok(())
}

fn extract_and_install(
    archive: &Path,
    dest: &Path,
    dataset: Dataset,
    final_dir: &Path,
) -> Result<()> {
    // A fresh folder of a random name for each call, created exclusively and removed when
    // `guard` drops (on error and on panic too): two threads of one process, or two containers
    // sharing the data folder with the same PID, never extract into the same one and find the
    // other's half-written files.
    fs::create_dir_all(dest).map_err(|e| DataError::io(dest, e))?;
    let guard = tempfile::Builder::new()
        .prefix(&format!(".extract-{}-", dataset.cli_name()))
        .tempdir_in(dest)
        .map_err(|e| DataError::io(dest, e))?;
    let tmp = guard.path();
    let result = (|| {
        extract_archive(archive, tmp)?;
        let extracted = tmp.join(dataset.folder_name());
        let missing: Vec<&str> = dataset
            .required_files()
            .into_iter()
            .filter(|f| !extracted.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(DataError::ArchiveContents {
                archive: archive.to_path_buf(),
                expected: format!(
                    "{}/ with {}",
                    dataset.folder_name(),
                    dataset.required_files().join(", ")
                ),
                found: describe_tree(tmp),
            });
        }
        validate(&extracted, dataset)?;
        if final_dir == dest {
            return install_in_place(&extracted, final_dir, dataset);
        }
        if final_dir.exists() {
            // Another process (a parallel test, a second shell) may have installed a valid copy
            // while we extracted: keep theirs. Otherwise it is an earlier, invalid copy.
            if validate(final_dir, dataset).is_ok() {
                return Ok(());
            }
            fs::remove_dir_all(final_dir).map_err(|e| DataError::io(final_dir, e))?;
        }
        match fs::rename(&extracted, final_dir) {
            Ok(()) => Ok(()),
            Err(_) if validate(final_dir, dataset).is_ok() => Ok(()),
            Err(e) => Err(DataError::io(final_dir, e)),
        }
    })();
    drop(guard);
    result
}

/// Moves the extracted files one by one into `final_dir`, which is `dest` itself (the data set's
/// folder, given as the destination): it holds the temporary extraction folder, and maybe the
/// archive or files of the user's, so it is not replaced as a whole. The earlier (invalid) batch
/// files are removed first, so that a run interrupted half-way leaves a set that does not load
/// rather than a mix of old and new files.
fn install_in_place(extracted: &Path, final_dir: &Path, dataset: Dataset) -> Result<()> {
    if validate(final_dir, dataset).is_ok() {
        // Installed by another process while we extracted: keep theirs.
        return Ok(());
    }
    for file in dataset.required_files() {
        let old = final_dir.join(file);
        match fs::remove_file(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DataError::io(&old, e)),
        }
    }
    let entries = fs::read_dir(extracted).map_err(|e| DataError::io(extracted, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(extracted, e))?;
        let to = final_dir.join(entry.file_name());
        fs::rename(entry.path(), &to).map_err(|e| DataError::io(&to, e))?;
    }
    Ok(())
}

/// The most bytes [`extract_archive`] writes: CIFAR-10 and CIFAR-100 unpack to about 180 MB.
pub const MAX_EXTRACTED_BYTES: u64 = 1 << 30;

/// Extracts the `.tar.gz` file `archive` into the existing folder `into`, refusing absolute
/// paths, `..` components and links (symbolic or hard), so nothing is ever written outside
/// `into`. Entries other than files and folders (pax headers, devices) are skipped. A damaged
/// archive is an error naming `archive`; what was extracted before the error stays in `into`
/// ([`fetch`] extracts into a temporary folder and removes it on error). An archive whose files
/// add up to more than [`MAX_EXTRACTED_BYTES`] is refused before the entry that crosses it is
/// written (a few hundred bytes of gzip can declare gigabytes).
pub fn extract_archive(archive: &Path, into: &Path) -> Result<()> {
    let file = fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let entries = tar.entries().map_err(|e| DataError::io(archive, e))?;
    let mut total: u64 = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| DataError::io(archive, e))?;
        let path = entry
            .path()
            .map_err(|e| DataError::io(archive, e))?
            .into_owned();
        let shown = path.display().to_string();
        let unsafe_entry = |reason| DataError::UnsafeArchiveEntry {
            archive: archive.to_path_buf(),
            entry: shown.clone(),
            reason,
        };
        for c in path.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => return Err(unsafe_entry("it contains `..`")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(unsafe_entry("it is an absolute path"))
                }
            }
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(unsafe_entry("links are not expected in a CIFAR archive"));
        }
        if !(kind.is_file() || kind.is_dir()) {
            // pax headers and the like carry no data of ours.
            continue;
        }
        total = total.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if total > MAX_EXTRACTED_BYTES {
            return Err(unsafe_entry(
                "the archive's files add up to more than 1 GiB (CIFAR's are about 180 MB)",
            ));
        }
        let out = into.join(&path);
        if kind.is_dir() {
            fs::create_dir_all(&out).map_err(|e| DataError::io(&out, e))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
        }
        let mut w = fs::File::create(&out).map_err(|e| DataError::io(&out, e))?;
        std::io::copy(&mut entry, &mut w).map_err(|e| DataError::io(archive, e))?;
    }
    Ok(())
}

/// A short listing of what an extraction produced, for error messages.
fn describe_tree(root: &Path) -> String {
    let mut names = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            if let Ok(rel) = p.strip_prefix(root) {
                names.push(rel.display().to_string());
            }
        }
    }
    names.sort();
    if names.is_empty() {
        return "an empty archive".to_string();
    }
    let more = names.len().saturating_sub(12);
    names.truncate(12);
    let mut s = names.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}
