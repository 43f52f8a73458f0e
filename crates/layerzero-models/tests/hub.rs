//! `hf://` weight locations resolved offline from a hub cache directory the test builds.
//! One test function only: it sets process environment variables, which must not race with
//! other tests of the same binary.

use std::path::Path;

use candle_core::Device;
use layerzero_models::hub::{resolve_weights, resolve_weights_with, HfLocation, HubOptions};
use layerzero_models::weights::to_safetensors_bytes;
use layerzero_models::{
    create_model, load_model, load_weights, LoadOptions, ModelConfig, ModelError, ModelRegistry,
    WeightsMetadata,
};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Lays a file out as Hugging Face clients do: blob, snapshot entry, and refs.
fn fill_cache(cache: &Path, repo_dir: &str, file: &str, bytes: &[u8]) {
    let repo = cache.join(repo_dir);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    let snap = repo.join("snapshots").join(COMMIT).join(file);
    std::fs::create_dir_all(snap.parent().unwrap()).unwrap();
    let blob = repo.join("blobs").join("0a1b2c3d");
    std::fs::write(&blob, bytes).unwrap();
    // Snapshot entries are symlinks into blobs/ on Unix.
    #[cfg(unix)]
    std::os::unix::fs::symlink(&blob, &snap).unwrap();
    #[cfg(not(unix))]
    std::fs::write(&snap, bytes).unwrap();
    std::fs::write(repo.join("refs").join("main"), COMMIT).unwrap();
    std::fs::write(repo.join("refs").join("v1"), format!("{COMMIT}\n")).unwrap();
}

#[test]
fn hf_locations_resolve_offline_from_a_filled_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    let net = create_model("resnet20", &ModelConfig::new(10).with_seed(4)).unwrap();
    let meta = WeightsMetadata::for_network(net.as_ref());
    let bytes = to_safetensors_bytes(net.as_ref(), &meta).unwrap();
    fill_cache(
        &cache,
        "models--someone--cifar-nets",
        "r20/model.safetensors",
        &bytes,
    );

    let opts = HubOptions {
        cache_dir: cache.clone(),
        offline: true,
        // Never asked: offline.
        endpoint: "http://127.0.0.1:9".to_string(),
    };
    for uri in [
        "hf://someone/cifar-nets/r20/model.safetensors",
        "hf://someone/cifar-nets@main/r20/model.safetensors",
        "hf://someone/cifar-nets@v1/r20/model.safetensors",
        &format!("hf://someone/cifar-nets@{COMMIT}/r20/model.safetensors"),
    ] {
        let p = resolve_weights_with(uri, &opts).unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "{uri}");
        // The lookup without hf-hub finds the same file.
        let loc = HfLocation::parse(uri).unwrap().unwrap();
        assert_eq!(loc.find_in_cache(&cache).unwrap(), p);
    }

    // Not cached and offline: an error naming the location, no network.
    for uri in [
        "hf://someone/cifar-nets/r20/other.safetensors",
        "hf://someone/cifar-nets@dev/r20/model.safetensors",
        "hf://nobody/cifar-nets/r20/model.safetensors",
    ] {
        match resolve_weights_with(uri, &opts) {
            Err(ModelError::Hub { uri: u, .. }) => assert_eq!(u, uri),
            other => panic!("{uri}: expected a hub error, got {other:?}"),
        }
    }
    // Malformed locations are refused before any lookup.
    for uri in [
        "hf://",
        "hf://someone",
        "hf://someone/cifar-nets",
        "hf://someone/cifar-nets/",
        "hf://someone/cifar-nets/../../etc/passwd",
        "hf://someone/cifar-nets/a//b",
        "hf:///cifar-nets/x",
        "hf://some one/cifar-nets/x",
        "hf://someone/cifar-nets@/x",
    ] {
        assert!(
            matches!(
                resolve_weights_with(uri, &opts),
                Err(ModelError::Hub { .. })
            ),
            "{uri}"
        );
    }
    // Plain paths pass through untouched.
    assert_eq!(
        resolve_weights_with("runs/x.safetensors", &opts).unwrap(),
        Path::new("runs/x.safetensors")
    );

    // Through the environment, as users run it: load_weights and load_model by hf:// name.
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let uri = "hf://someone/cifar-nets/r20/model.safetensors";
    assert!(resolve_weights(uri).is_ok());
    let other = create_model("resnet20", &ModelConfig::new(10).with_seed(5)).unwrap();
    load_weights(other.as_ref(), uri, &LoadOptions::default()).unwrap();
    assert_eq!(to_safetensors_bytes(other.as_ref(), &meta).unwrap(), bytes);
    let (loaded, m) = load_model(uri, &Device::Cpu, &ModelRegistry::new()).unwrap();
    assert_eq!(m.arch.as_deref(), Some("resnet20"));
    assert_eq!(to_safetensors_bytes(loaded.as_ref(), &meta).unwrap(), bytes);
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::remove_var("HF_HUB_CACHE");
}
