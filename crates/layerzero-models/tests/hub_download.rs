//! `hf://` weights downloaded through hf-hub from a loopback server that answers as the
//! Hugging Face hub does (`HEAD`/`GET /{owner}/{repo}/resolve/{revision}/{path}` with `ETag` and
//! `X-Repo-Commit`), pointed at through `HF_ENDPOINT`, as a user would point at a mirror.
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

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Device;
use layerzero_models::hub::{resolve_weights, resolve_weights_with, HfLocation, HubOptions};
use layerzero_models::weights::to_safetensors_bytes;
use layerzero_models::{
    create_model, load_model, ModelConfig, ModelError, ModelRegistry, WeightsMetadata,
};

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
const FILE_URL: &str = "/someone/cifar-nets/resolve/main/r20/model.safetensors";
const SHORT_URL: &str = "/someone/cifar-nets/resolve/main/r20/short.safetensors";

/// The hub's side: which request lines it saw, and what it serves.
struct Hub {
    endpoint: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Hub {
    /// Serves `bytes` at [`FILE_URL`], the same announced length but only half the bytes at
    /// [`SHORT_URL`], and 404 with the hub's `X-Error-Code` for anything else.
    fn start(bytes: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let bytes = Arc::new(bytes);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = answer(stream, &bytes, &log);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Hub { endpoint, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(mut stream: TcpStream, bytes: &[u8], log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let Some(head) = layerzero_testkit::http::read_request_head(&mut stream)? else {
        return Ok(());
    };
    let line = head.lines().next().unwrap_or_default().to_string();
    log.lock().unwrap().push(line.clone());
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    // The hub's ETag of a file is its content's hash; files differ, so must their ETags
    // (hf-hub reuses a blob it already has under the same ETag).
    let etag = format!(
        "\"{}\"",
        if path == FILE_URL { "e" } else { "f" }.repeat(64)
    );
    let found = |sent: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {etag}\r\nX-Repo-Commit: {COMMIT}\r\n\
             Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            bytes.len()
        )
        .into_bytes()
        .into_iter()
        .chain(if method == "GET" {
            bytes[..sent].to_vec()
        } else {
            Vec::new()
        })
        .collect::<Vec<u8>>()
    };
    let reply = match path {
        FILE_URL => found(bytes.len()),
        SHORT_URL => found(bytes.len() / 2),
        _ => b"HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\nContent-Length: 0\r\n\
               Connection: close\r\n\r\n"
            .to_vec(),
    };
    stream.write_all(&reply)?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

fn hub_error(result: layerzero_models::Result<std::path::PathBuf>, uri: &str) -> String {
    match result {
        Err(e @ ModelError::Hub { .. }) => {
            let ModelError::Hub { uri: u, .. } = &e else {
                unreachable!()
            };
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
    std::env::set_var("HF_ENDPOINT", &hub.endpoint);
    // Nothing of the developer's own hub setup may take part.
    std::env::remove_var("HF_TOKEN");
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
    let asked = hub.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.starts_with("GET ") && r.contains(FILE_URL)),
        "{asked:?}"
    );

    // Again, online and offline: from the cache, without another request.
    let n = hub.requests().len();
    assert_eq!(resolve_weights_with(uri, &online).unwrap(), path);
    assert_eq!(resolve_weights_with(uri, &offline).unwrap(), path);
    assert_eq!(hub.requests().len(), n, "{:?}", hub.requests());

    // As users run it: `load_model` by hf:// name with the cache from the environment.
    std::env::set_var("HF_HUB_CACHE", dir.path().join("other-cache"));
    let (loaded, m) = load_model(uri, &Device::Cpu, &ModelRegistry::new()).unwrap();
    assert_eq!(m.arch.as_deref(), Some("resnet20"));
    assert_eq!(to_safetensors_bytes(loaded.as_ref(), &meta).unwrap(), bytes);
    assert!(resolve_weights(uri)
        .unwrap()
        .starts_with(dir.path().join("other-cache")));

    // A file the hub does not have: an error naming the location.
    let missing = "hf://someone/cifar-nets/r20/absent.safetensors";
    let msg = hub_error(resolve_weights_with(missing, &online), missing);
    assert!(
        msg.contains(&format!("download from {} failed", hub.endpoint)),
        "{msg}"
    );
    assert!(HfLocation::parse(missing)
        .unwrap()
        .unwrap()
        .find_in_cache(&cache)
        .is_none());

    // A transfer cut short: an error, and no truncated file where the weights would be.
    let short = "hf://someone/cifar-nets/r20/short.safetensors";
    let msg = hub_error(resolve_weights_with(short, &online), short);
    assert!(
        msg.contains(&format!("download from {} failed", hub.endpoint)),
        "{msg}"
    );
    let short_loc = HfLocation::parse(short).unwrap().unwrap();
    assert!(short_loc.find_in_cache(&cache).is_none());
    assert!(
        resolve_weights_with(short, &offline).is_err(),
        "a cut transfer left a file the offline lookup accepts"
    );

    std::env::remove_var("HF_HUB_CACHE");
    std::env::remove_var("HF_ENDPOINT");
}
