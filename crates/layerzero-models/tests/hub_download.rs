//! `hf://` weights downloaded through hf-hub from loopback servers that answer as the Hugging
//! Face hub's HTTP interface does, pointed at through `HF_ENDPOINT`, as a user would point at
//! a mirror. What they mimic: `HEAD` then `GET /{owner}/{repo}/resolve/{revision}/{path}`;
//! a small file answered in place (`ETag`, `X-Repo-Commit`); a large (LFS) file answered with
//! a redirect to another host, a CDN, carrying `X-Linked-Etag`, `X-Linked-Size` and
//! `X-Repo-Commit`; a missing file answered 404 with `X-Error-Code: EntryNotFound` and the
//! commit. What they do not: the Xet storage protocol (`X-Xet-Hash`), which hf-hub takes
//! through the `hf-xet` crate for files stored that way; no test here covers that path.
//!
//! Only with the `hub` feature, whose HTTP stack takes long to build, so CI's
//! `cargo test --workspace` does not build it:
//!
//! ```text
//! cargo test -p layerzero-models --features hub --test hub_download
//! ```
//!
//! One test function: it sets process environment variables, which must not race with other
//! tests of the same binary.
#![cfg(feature = "hub")]

use std::sync::Arc;

use candle_core::Device;
use layerzero_models::hub::{resolve_weights, resolve_weights_with, HfLocation, HubOptions};
use layerzero_models::weights::to_safetensors_bytes;
use layerzero_models::{
    create_model, load_model, ModelConfig, ModelError, ModelRegistry, WeightsMetadata,
};
use layerzero_testkit::http::Server;

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
const RESOLVE: &str = "/someone/cifar-nets/resolve/main/r20/";
/// A small file, answered in place.
const FILE: &str = "model.safetensors";
/// An LFS file, answered with a redirect to the CDN.
const LFS: &str = "lfs.safetensors";
/// Announces the whole length, sends half.
const SHORT: &str = "short.safetensors";
/// Where the CDN serves the LFS file.
const CDN_PATH: &str = "/repos/ab/cd/blob-of-lfs";

/// A response: status line, headers, and the body unless the request was a HEAD.
fn response(method: &str, status: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body);
    }
    out
}

/// The hub and its CDN.
struct Hub {
    endpoint: String,
    hub: Server,
    cdn: Server,
}

impl Hub {
    fn start(bytes: Vec<u8>) -> Self {
        let bytes = Arc::new(bytes);
        let cdn_bytes = bytes.clone();
        let cdn = Server::start(usize::MAX, move |method, path| {
            if path == CDN_PATH {
                let len = format!("Content-Length: {}", cdn_bytes.len());
                response(method, "200 OK", &[len], &cdn_bytes)
            } else {
                response(method, "403 Forbidden", &["Content-Length: 0".into()], b"")
            }
        });
        let cdn_base = cdn.base.clone();
        let hub = Server::start(usize::MAX, move |method, path| {
            let commit = format!("X-Repo-Commit: {COMMIT}");
            // The hub's ETag of a file is its content's hash; files differ, so must their
            // ETags (hf-hub reuses a blob it already has under the same ETag).
            let etag = |c: &str| format!("ETag: \"{}\"", c.repeat(64));
            let len = format!("Content-Length: {}", bytes.len());
            match path.strip_prefix(RESOLVE).unwrap_or_default() {
                FILE => response(method, "200 OK", &[len, etag("e"), commit], &bytes),
                SHORT => {
                    let half = &bytes[..bytes.len() / 2];
                    response(method, "200 OK", &[len, etag("f"), commit], half)
                }
                LFS => {
                    // As the hub answers an LFS file: a redirect to the CDN whose headers name
                    // the file's own hash and size (X-Linked-*); its ETag is the pointer's.
                    let headers = [
                        format!("Location: {cdn_base}{CDN_PATH}"),
                        format!("X-Linked-Etag: \"{}\"", "a".repeat(64)),
                        format!("X-Linked-Size: {}", bytes.len()),
                        "ETag: \"pointer-file-etag\"".into(),
                        "Content-Length: 0".into(),
                        commit,
                    ];
                    response(method, "302 Found", &headers, b"")
                }
                _ => {
                    let headers = [
                        "X-Error-Code: EntryNotFound".into(),
                        "Content-Length: 0".into(),
                        commit,
                    ];
                    response(method, "404 Not Found", &headers, b"")
                }
            }
        });
        Hub {
            endpoint: hub.base.clone(),
            hub,
            cdn,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.hub.requests()
    }
}

fn hub_error(result: layerzero_models::Result<std::path::PathBuf>, uri: &str) -> String {
    match &result {
        Err(e @ ModelError::Hub { uri: u, .. }) => {
            assert_eq!(u, uri);
            e.to_string()
        }
        other => panic!("{uri}: expected a hub error, got {other:?}"),
    }
}

#[test]
fn hf_locations_download_into_the_cache_through_hf_hub() {
    let net = create_model("resnet20", &ModelConfig::new(10).with_seed(6)).unwrap();
    let meta = WeightsMetadata::for_network(net.as_ref());
    let bytes = to_safetensors_bytes(net.as_ref(), &meta).unwrap();
    let hub = Hub::start(bytes.clone());
    // Through the environment, as a user points at a mirror; `load_model` below reads it too.
    // A trailing slash is what people type; it must not double in the URLs.
    std::env::set_var("HF_ENDPOINT", format!("{}/", hub.endpoint));
    // Nothing of the developer's own hub setup may take part, their token least of all.
    std::env::remove_var("HF_TOKEN");
    std::env::set_var("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1");
    std::env::remove_var("HF_HUB_OFFLINE");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    let online = HubOptions {
        cache_dir: cache.clone(),
        offline: false,
        ..HubOptions::from_env()
    };
    assert_eq!(online.endpoint, hub.endpoint);
    let offline = HubOptions {
        offline: true,
        ..online.clone()
    };
    let uri = "hf://someone/cifar-nets/r20/model.safetensors";

    // Offline and not cached: refused without a request.
    let msg = hub_error(resolve_weights_with(uri, &offline), uri);
    assert!(msg.contains("offline"), "{msg}");
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());

    // Online: downloaded, byte for byte, into the layout every hub client reads.
    let path = resolve_weights_with(uri, &online).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(path.starts_with(&cache), "{}", path.display());
    let loc = HfLocation::parse(uri).unwrap().unwrap();
    let cached = loc
        .find_in_cache(&cache)
        .expect("the cache-only lookup finds it");
    assert_eq!(std::fs::read(cached).unwrap(), bytes);
    assert_eq!(
        std::fs::read_to_string(cache.join("models--someone--cifar-nets/refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    assert_eq!(
        hub.requests(),
        [
            format!("HEAD {RESOLVE}{FILE}"),
            format!("GET {RESOLVE}{FILE}")
        ]
    );

    // Again, online and offline: from the cache, without another request.
    assert_eq!(resolve_weights_with(uri, &online).unwrap(), path);
    assert_eq!(resolve_weights_with(uri, &offline).unwrap(), path);
    assert_eq!(hub.requests().len(), 2, "{:?}", hub.requests());

    // An LFS file: the hub redirects to its CDN, which serves the bytes.
    let lfs = "hf://someone/cifar-nets/r20/lfs.safetensors";
    let lfs_path = resolve_weights_with(lfs, &online).unwrap();
    assert_eq!(std::fs::read(&lfs_path).unwrap(), bytes);
    assert_eq!(
        hub.cdn.requests(),
        [format!("GET {CDN_PATH}")],
        "the download did not come from the CDN"
    );
    // Stored under the file's own hash (X-Linked-Etag), not the pointer's ETag.
    let blob = cache
        .join("models--someone--cifar-nets/blobs")
        .join("a".repeat(64));
    assert_eq!(std::fs::read(blob).unwrap(), bytes);

    // As users run it: `load_model` by hf:// name with the cache from the environment.
    std::env::set_var("HF_HUB_CACHE", dir.path().join("other-cache"));
    let (loaded, m) = load_model(uri, &Device::Cpu, &ModelRegistry::new()).unwrap();
    assert_eq!(m.arch.as_deref(), Some("resnet20"));
    assert_eq!(to_safetensors_bytes(loaded.as_ref(), &meta).unwrap(), bytes);
    assert!(resolve_weights(uri)
        .unwrap()
        .starts_with(dir.path().join("other-cache")));

    // A file the hub does not have: an error naming the location and the server.
    let missing = "hf://someone/cifar-nets/r20/absent.safetensors";
    let msg = hub_error(resolve_weights_with(missing, &online), missing);
    let from = format!("download from {} failed", hub.endpoint);
    assert!(msg.contains(&from) && msg.contains("not found"), "{msg}");
    assert!(HfLocation::parse(missing)
        .unwrap()
        .unwrap()
        .find_in_cache(&cache)
        .is_none());
    // hf-hub remembers the 404 in the cache (`.no_exist/`). Online, the hub is asked again, so
    // a file uploaded since is found; offline, the error says it is offline.
    let n = hub.requests().len();
    let msg = hub_error(resolve_weights_with(missing, &online), missing);
    assert!(msg.contains(&from), "{msg}");
    assert_eq!(
        hub.requests()[n..],
        [format!("HEAD {RESOLVE}absent.safetensors")]
    );
    let msg = hub_error(resolve_weights_with(missing, &offline), missing);
    assert!(msg.contains("offline"), "{msg}");

    // A transfer cut short: an error, and no truncated file where the weights would be (hf-hub
    // keeps the partial bytes as `blobs/<etag>.incomplete`, which no lookup returns).
    let short = "hf://someone/cifar-nets/r20/short.safetensors";
    let msg = hub_error(resolve_weights_with(short, &online), short);
    assert!(msg.contains(&from), "{msg}");
    let short_loc = HfLocation::parse(short).unwrap().unwrap();
    assert!(short_loc.find_in_cache(&cache).is_none());
    assert!(
        resolve_weights_with(short, &offline).is_err(),
        "a cut transfer left a file the offline lookup accepts"
    );

    std::env::remove_var("HF_HUB_CACHE");
    std::env::remove_var("HF_ENDPOINT");
    std::env::remove_var("HF_HUB_DISABLE_IMPLICIT_TOKEN");
}
