//! `hf://owner/repo[@revision]/path/in/repo.safetensors` weight locations, resolved through the
//! Hugging Face hub cache.
//!
//! The location syntax is that of `huggingface_hub`'s `HfFileSystem`. Resolution first looks in
//! the local cache, laid out as every Hugging Face client lays it out:
//!
//! ```text
//! <cache>/models--<owner>--<repo>/refs/<revision>          (file holding a commit hash)
//! <cache>/models--<owner>--<repo>/snapshots/<commit>/<path>
//! ```
//!
//! (see [`HubOptions::from_env`] for where `<cache>` is). A revision that is a full commit hash
//! is used directly. A file found there is used without any network access, so a filled cache
//! works offline. With the `hub` cargo feature (off by default) the lookup and, for a file missing from the
//! cache, the download go through the `hf-hub` crate; `HF_HUB_OFFLINE=1` forbids downloads, and
//! `HF_ENDPOINT` ([`HubOptions::endpoint`]) points them at a mirror instead of
//! `https://huggingface.co` (the hub feature's test, `tests/hub_download.rs`, points them at a
//! loopback server).

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// A parsed `hf://` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfLocation {
    /// Repository owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Branch, tag or commit; `main` when not given.
    pub revision: String,
    /// Path of the file inside the repository.
    pub path: String,
}

impl HfLocation {
    /// Parses `hf://owner/repo[@revision]/path`; `None` if `s` does not start with `hf://`.
    pub fn parse(s: &str) -> Option<Result<Self>> {
        let rest = s.strip_prefix("hf://")?;
        Some(Self::parse_rest(s, rest))
    }

    fn parse_rest(uri: &str, rest: &str) -> Result<Self> {
        let bad = |why: &str| ModelError::Hub {
            uri: uri.to_string(),
            message: format!("{why}; expected hf://owner/repo[@revision]/path"),
        };
        let mut parts = rest.splitn(3, '/');
        let owner = parts.next().unwrap_or_default();
        let repo_rev = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        let (repo, revision) = match repo_rev.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (repo_rev, "main"),
        };
        let ok_part = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !ok_part(owner) || !ok_part(repo) {
            return Err(bad("bad owner or repository name"));
        }
        // Revisions may contain '/' in git, but then the location is ambiguous; refuse it.
        if !ok_part(revision) {
            return Err(bad("bad revision"));
        }
        // The path must stay inside the snapshot directory.
        if path.is_empty()
            || path.starts_with('/')
            || path
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(bad("bad file path"));
        }
        Ok(HfLocation {
            owner: owner.to_string(),
            repo: repo.to_string(),
            revision: revision.to_string(),
            path: path.to_string(),
        })
    }

    /// `owner/repo`.
    pub fn repo_id(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    /// The file in a hub cache rooted at `cache`, if it is there.
    pub fn find_in_cache(&self, cache: &Path) -> Option<PathBuf> {
        let repo_dir = cache.join(format!("models--{}--{}", self.owner, self.repo));
        let is_commit =
            self.revision.len() == 40 && self.revision.chars().all(|c| c.is_ascii_hexdigit());
        let commit = if is_commit {
            self.revision.clone()
        } else {
            let r = std::fs::read_to_string(repo_dir.join("refs").join(&self.revision)).ok()?;
            let r = r.trim().to_string();
            // A ref file holding anything but a hash would let the path escape the cache.
            if r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric()) {
                return None;
            }
            r
        };
        let file = repo_dir.join("snapshots").join(commit).join(&self.path);
        file.is_file().then_some(file)
    }
}

/// Where and how `hf://` locations are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Root of the hub cache.
    pub cache_dir: PathBuf,
    /// Never touch the network: a file missing from the cache is an error.
    pub offline: bool,
    /// Base URL of the hub that downloads come from (with the `hub` feature).
    pub endpoint: String,
}

/// The Hugging Face hub, where downloads go unless `HF_ENDPOINT` names a mirror.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl HubOptions {
    /// Options from the environment, as Hugging Face clients read it: the cache is
    /// `$HF_HUB_CACHE`, else `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`; offline when
    /// `HF_HUB_OFFLINE` is `1`, `true`, `yes` or `on`; downloads from `$HF_ENDPOINT` (without a
    /// trailing `/`), else [`DEFAULT_ENDPOINT`].
    pub fn from_env() -> Self {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let cache_dir = env("HF_HUB_CACHE")
            .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
            .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| env("XDG_CACHE_HOME").map(|h| h.join("huggingface").join("hub")))
            .unwrap_or_else(|| {
                env("HOME")
                    .unwrap_or_else(|| PathBuf::from("/tmp"))
                    .join(".cache")
                    .join("huggingface")
                    .join("hub")
            });
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .map(|v| v.trim_end_matches('/').to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        HubOptions {
            cache_dir,
            offline,
            endpoint,
        }
    }
}

/// Resolves a weight location to a local file: plain paths are returned as they are, `hf://`
/// locations through the hub cache with [`HubOptions::from_env`].
pub fn resolve_weights(source: &str) -> Result<PathBuf> {
    resolve_weights_with(source, &HubOptions::from_env())
}

/// [`resolve_weights`] with explicit options.
pub fn resolve_weights_with(source: &str, opts: &HubOptions) -> Result<PathBuf> {
    match HfLocation::parse(source) {
        None => Ok(PathBuf::from(source)),
        Some(loc) => resolve_hf(&loc?, opts, source),
    }
}

fn hub_error(uri: &str, message: impl Into<String>) -> ModelError {
    ModelError::Hub {
        uri: uri.to_string(),
        message: message.into(),
    }
}

/// Looks the file up in the cache through hf-hub, and downloads it unless offline.
#[cfg(feature = "hub")]
fn resolve_hf(loc: &HfLocation, opts: &HubOptions, uri: &str) -> Result<PathBuf> {
    let client = hf_hub::HFClient::builder()
        .cache_dir(opts.cache_dir.clone())
        .endpoint(opts.endpoint.clone())
        .build_sync()
        .map_err(|e| hub_error(uri, format!("cannot create a hub client: {e}")))?;
    let repo = client.model(loc.owner.clone(), loc.repo.clone());
    let lookup = |local_files_only: bool| {
        repo.download_file()
            .filename(loc.path.clone())
            .revision(loc.revision.clone())
            .local_files_only(local_files_only)
            .send()
    };
    match lookup(true) {
        Ok(p) => Ok(p),
        Err(e) if opts.offline => Err(hub_error(
            uri,
            format!(
                "not usable from the hub cache {} (offline): {e}",
                opts.cache_dir.display()
            ),
        )),
        // Not in the cache, or (EntryNotFound) remembered there as missing from an earlier
        // 404: ask the hub, which may have the file since.
        Err(_) => lookup(false)
            .map_err(|e| hub_error(uri, format!("download from {} failed: {e}", opts.endpoint))),
    }
}

/// Without the `hub` feature only the cache is consulted.
#[cfg(not(feature = "hub"))]
fn resolve_hf(loc: &HfLocation, opts: &HubOptions, uri: &str) -> Result<PathBuf> {
    loc.find_in_cache(&opts.cache_dir).ok_or_else(|| {
        hub_error(
            uri,
            format!(
                "`{}` at revision `{}` of {} is not in the hub cache {}, and this build has no \
                 `hub` feature to download it",
                loc.path,
                loc.revision,
                loc.repo_id(),
                opts.cache_dir.display()
            ),
        )
    })
}
