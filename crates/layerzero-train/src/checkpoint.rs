//! Checkpoints: one safetensors file holding the model state, the optimiser's momentum buffers,
//! the training position and configuration, and a checksum over all of it.
//!
//! Layout: model tensors under their PyTorch names (`conv1.weight`, `bn1.running_mean`, …),
//! momentum buffers under `optimizer.momentum.<name>`; header metadata `layerzero.checkpoint`
//! (JSON of [`CheckpointMeta`]) and `layerzero.checksum` (SHA-256, see [`content_digest`]).
//!
//! Written atomically (temporary file, fsync, rename, fsync of the folder), so a crash leaves
//! either the old file or the new one. On load, anything that fails to parse or to match its
//! checksum is refused with an error naming the file: a truncated or bit-flipped checkpoint is
//! never loaded.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};

/// Prefix of the optimiser's tensors inside a checkpoint.
pub const MOMENTUM_PREFIX: &str = "optimizer.momentum.";
/// The header entry that makes a safetensors file a training checkpoint (its position and
/// configuration, as JSON): what tells a checkpoint from plain weights, even one written before
/// the first step, which has no momentum buffers yet.
pub const META_KEY: &str = "layerzero.checkpoint";
const CHECKSUM_KEY: &str = "layerzero.checksum";

/// Where training stands, and how it was configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format version of this struct.
    pub format: u32,
    /// Epochs completed (0 = the initialisation).
    pub epoch: usize,
    /// Optimiser steps completed.
    pub step: usize,
    /// The seed every random stream derives from. With `epoch` and `step` it *is* the RNG state:
    /// the data order and augmentation are pure functions of `(seed, epoch, position)`.
    pub seed: u64,
    /// The model's architecture name.
    pub arch: String,
    /// The full training configuration, as JSON.
    pub config: serde_json::Value,
}

/// A checkpoint in memory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Position and configuration.
    pub meta: CheckpointMeta,
    /// Model state: parameters, running statistics, `num_batches_tracked`.
    pub model: BTreeMap<String, Tensor>,
    /// Momentum buffers by parameter name.
    pub momentum: BTreeMap<String, Tensor>,
}

fn st_dtype(dtype: DType) -> Option<StDtype> {
    match dtype {
        DType::F32 => Some(StDtype::F32),
        DType::I64 => Some(StDtype::I64),
        DType::U32 => Some(StDtype::U32),
        _ => None,
    }
}

fn tensor_bytes(name: &str, t: &Tensor) -> Result<(StDtype, Vec<u8>)> {
    let t = t.to_device(&Device::Cpu)?.flatten_all()?;
    let dtype = st_dtype(t.dtype()).ok_or_else(|| {
        TrainError::StateMismatch(format!(
            "tensor {name}: dtype {:?} cannot be checkpointed (f32, i64, u32 can)",
            t.dtype()
        ))
    })?;
    let bytes = match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I64 => t
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        _ => t
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    };
    Ok((dtype, bytes))
}

/// The checksum of a checkpoint: SHA-256 over each tensor in name order (name, dtype, shape,
/// little-endian data) followed by the metadata JSON.
pub fn content_digest<'a>(
    tensors: impl IntoIterator<Item = (&'a str, StDtype, &'a [usize], &'a [u8])>,
    meta_json: &str,
) -> String {
    let mut h = Sha256::new();
    for (name, dtype, shape, data) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}").as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.update(meta_json.as_bytes());
    hex::encode(h.finalize())
}

impl Checkpoint {
    /// Writes the checkpoint atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut entries: BTreeMap<String, (StDtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
        for (name, t) in &self.model {
            let (dt, bytes) = tensor_bytes(name, t)?;
            entries.insert(name.clone(), (dt, t.dims().to_vec(), bytes));
        }
        for (name, t) in &self.momentum {
            let full = format!("{MOMENTUM_PREFIX}{name}");
            let (dt, bytes) = tensor_bytes(&full, t)?;
            entries.insert(full, (dt, t.dims().to_vec(), bytes));
        }
        let meta_json = serde_json::to_string(&self.meta).map_err(|e| {
            TrainError::StateMismatch(format!("serialising checkpoint metadata: {e}"))
        })?;
        let digest = content_digest(
            entries
                .iter()
                .map(|(n, (dt, s, b))| (n.as_str(), *dt, s.as_slice(), b.as_slice())),
            &meta_json,
        );
        let header = BTreeMap::from([
            (META_KEY.to_string(), meta_json),
            (CHECKSUM_KEY.to_string(), digest),
        ]);
        // The models crate's writer, not safetensors' `serialize`, whose metadata map (a
        // `HashMap`) wrote the two keys in a random order: the same checkpoint saved twice
        // could differ in bytes.
        let tensors = entries
            .into_iter()
            .map(|(name, (dt, shape, bytes))| (name, dt, shape, bytes))
            .collect();
        let bytes = layerzero_models::weights::encode_safetensors(tensors, |_| header)?;
        write_atomic(path, &bytes)
    }

    /// Reads and verifies a checkpoint; tensors are placed on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_bytes(&bytes, path, device)
    }

    /// Verifies and decodes the bytes of a checkpoint file (see [`Checkpoint::load`]); `path`
    /// only names the bytes in errors. Any malformed input is a
    /// [`TrainError::CorruptCheckpoint`], never a panic.
    pub fn from_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<Self> {
        let corrupt = |reason: String| TrainError::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| corrupt(format!("unreadable safetensors header ({e})")))?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| corrupt(format!("unreadable safetensors data ({e})")))?;
        let meta_map = header
            .metadata()
            .as_ref()
            .ok_or_else(|| corrupt("no layerzero metadata in the header".into()))?;
        let meta_json = meta_map
            .get(META_KEY)
            .ok_or_else(|| corrupt(format!("header lacks `{META_KEY}`")))?;
        let expected = meta_map
            .get(CHECKSUM_KEY)
            .ok_or_else(|| corrupt(format!("header lacks `{CHECKSUM_KEY}`")))?;
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        let mut views = Vec::with_capacity(names.len());
        for name in &names {
            let v = st
                .tensor(name)
                .map_err(|e| corrupt(format!("tensor {name}: {e}")))?;
            views.push((name.clone(), v));
        }
        let found = content_digest(
            views
                .iter()
                .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
            meta_json,
        );
        if &found != expected {
            return Err(corrupt(format!(
                "checksum mismatch: header says {expected}, contents give {found}"
            )));
        }
        let meta: CheckpointMeta = serde_json::from_str(meta_json)
            .map_err(|e| corrupt(format!("metadata `{META_KEY}` is not valid: {e}")))?;
        let mut model = BTreeMap::new();
        let mut momentum = BTreeMap::new();
        for (name, v) in views {
            let t =
                view_to_tensor(&v, device).map_err(|e| corrupt(format!("tensor {name}: {e}")))?;
            match name.strip_prefix(MOMENTUM_PREFIX) {
                Some(p) => momentum.insert(p.to_string(), t),
                None => model.insert(name, t),
            };
        }
        Ok(Checkpoint {
            meta,
            model,
            momentum,
        })
    }
}

fn view_to_tensor(v: &TensorView<'_>, device: &Device) -> std::result::Result<Tensor, String> {
    let shape = v.shape().to_vec();
    let data = v.data();
    let t = match v.dtype() {
        StDtype::F32 => {
            let vals: Vec<f32> = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Tensor::from_vec(vals, shape, device)
        }
        StDtype::I64 => {
            let vals: Vec<i64> = data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            Tensor::from_vec(vals, shape, device)
        }
        StDtype::U32 => {
            let vals: Vec<u32> = data
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Tensor::from_vec(vals, shape, device)
        }
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    t.map_err(|e| e.to_string())
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
/// folder. Readers see the old contents or the new, never a mixture.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use layerzero_models::atomic::{folder_of, sync_folder, temporary_for, write_synced};
    let dir = folder_of(path);
    fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let tmp =
        temporary_for(path).unwrap_or_else(|| dir.join(format!(".tmp-{}", std::process::id())));
    let result = (|| {
        write_synced(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
        sync_folder(dir).map_err(|e| TrainError::io(dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Result<Checkpoint> {
        let dev = Device::Cpu;
        let mut model = BTreeMap::new();
        model.insert(
            "conv1.weight".to_string(),
            Tensor::arange(0f32, 24.0, &dev)?.reshape((2, 3, 2, 2))?,
        );
        model.insert(
            "bn1.num_batches_tracked".to_string(),
            Tensor::new(7i64, &dev)?,
        );
        let mut momentum = BTreeMap::new();
        momentum.insert(
            "conv1.weight".to_string(),
            Tensor::ones((2, 3, 2, 2), DType::F32, &dev)?,
        );
        Ok(Checkpoint {
            meta: CheckpointMeta {
                format: 1,
                epoch: 3,
                step: 1200,
                seed: 42,
                arch: "resnet20".into(),
                config: serde_json::json!({"profile": "quick"}),
            },
            model,
            momentum,
        })
    }

    /// The same checkpoint gives the same bytes every time (with safetensors' `serialize`, the
    /// two metadata keys came out in a `HashMap`'s random order: eight saves all alike had odds
    /// of 1 in 128).
    #[test]
    fn saving_is_deterministic() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let ck = sample()?;
        let read = |i: usize| -> Result<Vec<u8>> {
            let path = dir.path().join(format!("ckpt-{i}.safetensors"));
            ck.save(&path)?;
            fs::read(&path).map_err(|e| TrainError::io(&path, e))
        };
        let first = read(0)?;
        for i in 1..8 {
            assert!(read(i)? == first, "save {i} differs from save 0");
        }
        Ok(())
    }

    #[test]
    fn round_trip_is_exact() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let path = dir.path().join("ckpt.safetensors");
        let ck = sample()?;
        ck.save(&path)?;
        let back = Checkpoint::load(&path, &Device::Cpu)?;
        assert_eq!(back.meta, ck.meta);
        assert_eq!(back.model.len(), 2);
        assert_eq!(
            back.model["conv1.weight"].flatten_all()?.to_vec1::<f32>()?,
            ck.model["conv1.weight"].flatten_all()?.to_vec1::<f32>()?
        );
        assert_eq!(back.model["conv1.weight"].dims(), &[2, 3, 2, 2]);
        assert_eq!(back.model["bn1.num_batches_tracked"].to_scalar::<i64>()?, 7);
        assert_eq!(back.momentum.len(), 1);
        // No temporary file is left beside it.
        assert_eq!(
            fs::read_dir(dir.path())
                .map_err(|e| TrainError::io("tmp", e))?
                .count(),
            1
        );
        Ok(())
    }

    #[test]
    fn truncated_or_flipped_checkpoints_are_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tmp", e))?;
        let path = dir.path().join("ckpt.safetensors");
        sample()?.save(&path)?;
        let good = fs::read(&path).map_err(|e| TrainError::io(&path, e))?;

        let truncated = dir.path().join("truncated.safetensors");
        fs::write(&truncated, &good[..good.len() - 10]).map_err(|e| TrainError::io("t", e))?;
        let err = Checkpoint::load(&truncated, &Device::Cpu).unwrap_err();
        assert!(matches!(err, TrainError::CorruptCheckpoint { .. }), "{err}");
        assert!(err.to_string().contains("truncated.safetensors"), "{err}");

        // Flip one bit in every byte position of the data section and of the metadata in turn
        // (a sample of positions keeps the test fast): each is refused.
        let flipped = dir.path().join("flipped.safetensors");
        for pos in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[pos] ^= 0x10;
            fs::write(&flipped, &bad).map_err(|e| TrainError::io("f", e))?;
            match Checkpoint::load(&flipped, &Device::Cpu) {
                Err(TrainError::CorruptCheckpoint { path, .. }) => assert_eq!(path, flipped),
                Err(other) => panic!("byte {pos}: unexpected error {other}"),
                Ok(_) => {
                    // A flip inside JSON whitespace or key order can leave the file equivalent;
                    // anything that loads must then be identical to the original.
                    let back = Checkpoint::load(&flipped, &Device::Cpu)?;
                    assert_eq!(
                        back.meta,
                        sample()?.meta,
                        "byte {pos} changed metadata silently"
                    );
                }
            }
        }
        Ok(())
    }
}
