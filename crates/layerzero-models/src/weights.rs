//! Weights in safetensors files, under the names of PyTorch's `state_dict()`, so that weights
//! trained in PyTorch load unchanged and ours load in PyTorch.
//!
//! - Float tensors are F32; `num_batches_tracked` is an I64 scalar, written on export and
//!   optional on import (a file without it leaves the counters as they are).
//! - Loading checks everything before changing anything: missing, unexpected, wrong-shape and
//!   wrong-dtype tensors are reported together in one [`ModelError::WeightMismatch`]; the
//!   network is only written when there is no problem at all.
//! - Files we write are deterministic: the same weights and metadata give the same bytes.
//!
//! Header metadata (all values are strings, as safetensors requires):
//!
//! | key | value |
//! | --- | --- |
//! | `layerzero.arch` | registry name, e.g. `resnet20-b` |
//! | `layerzero.shortcut` | `A`, `B` or `none` |
//! | `layerzero.num_classes` | decimal integer |
//! | `layerzero.dataset` | free text chosen by the writer, e.g. `cifar10` |
//! | `layerzero.normalization` | input normalisation the weights expect, free text, e.g. `mean=[0.4914, 0.4822, 0.4465] std=[0.247, 0.2435, 0.2616]` (what `layerzero train` writes for CIFAR-10) |
//! | `layerzero.sha256` | hex SHA-256 of the data section (every byte after the header), written by [`to_safetensors_bytes`] |
//!
//! A file that carries `layerzero.sha256` is checked against it on every load, so a bit flip
//! in the weights is an error, not silently different weights. Files without it (written by
//! PyTorch, or by older versions) load unchecked.
//!
//! Other keys are kept in [`WeightsMetadata::other`] and written back unchanged.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorInfo};
use sha2::Digest;

use crate::arch::{ModelConfig, ModelRegistry};
use crate::error::{ModelError, Result, WeightProblem};
use crate::init::Init;
use crate::network::Network;
use crate::params::TensorRole;

/// Metadata key of the architecture name.
pub const META_ARCH: &str = "layerzero.arch";
/// Metadata key of the shortcut option.
pub const META_SHORTCUT: &str = "layerzero.shortcut";
/// Metadata key of the input normalisation.
pub const META_NORMALIZATION: &str = "layerzero.normalization";
/// Metadata key of the data set.
pub const META_DATASET: &str = "layerzero.dataset";
/// Metadata key of the number of classes.
pub const META_NUM_CLASSES: &str = "layerzero.num_classes";
/// Metadata key of the SHA-256 of the data section; checked on load, not kept in
/// [`WeightsMetadata`].
pub const META_SHA256: &str = "layerzero.sha256";

/// The `layerzero.*` entries of a safetensors header, plus any other entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightsMetadata {
    /// `layerzero.arch`.
    pub arch: Option<String>,
    /// `layerzero.shortcut`.
    pub shortcut: Option<String>,
    /// `layerzero.normalization`.
    pub normalization: Option<String>,
    /// `layerzero.dataset`.
    pub dataset: Option<String>,
    /// `layerzero.num_classes`.
    pub num_classes: Option<usize>,
    /// Every other header entry (e.g. PyTorch-written `framework`), kept verbatim.
    pub other: BTreeMap<String, String>,
}

impl WeightsMetadata {
    /// Architecture, shortcut and class count of `net`; data set and normalisation unset.
    pub fn for_network(net: &dyn Network) -> Self {
        let spec = net.spec();
        WeightsMetadata {
            arch: Some(spec.name.clone()),
            shortcut: Some(spec.shortcut.as_str().to_string()),
            num_classes: Some(spec.num_classes),
            ..Default::default()
        }
    }

    /// Sets the data set.
    pub fn with_dataset(mut self, dataset: impl Into<String>) -> Self {
        self.dataset = Some(dataset.into());
        self
    }

    /// Sets the input normalisation.
    pub fn with_normalization(mut self, normalization: impl Into<String>) -> Self {
        self.normalization = Some(normalization.into());
        self
    }

    /// The header entries, sorted by key.
    pub fn to_header(&self) -> BTreeMap<String, String> {
        let mut h = self.other.clone();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                h.insert(k.to_string(), v.clone());
            }
        };
        put(META_ARCH, &self.arch);
        put(META_SHORTCUT, &self.shortcut);
        put(META_NORMALIZATION, &self.normalization);
        put(META_DATASET, &self.dataset);
        put(META_NUM_CLASSES, &self.num_classes.map(|n| n.to_string()));
        h
    }

    /// Reads the entries of a header; fails only on a `layerzero.num_classes` that is not a
    /// positive integer.
    pub fn from_header(header: &HashMap<String, String>) -> Result<Self> {
        let mut m = WeightsMetadata::default();
        for (k, v) in header {
            match k.as_str() {
                META_ARCH => m.arch = Some(v.clone()),
                META_SHORTCUT => m.shortcut = Some(v.clone()),
                META_NORMALIZATION => m.normalization = Some(v.clone()),
                META_DATASET => m.dataset = Some(v.clone()),
                // Belongs to the bytes it was computed from, not to the weights: never copied.
                META_SHA256 => {}
                META_NUM_CLASSES => match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => m.num_classes = Some(n),
                    _ => {
                        return Err(ModelError::BadMetadata {
                            key: k.clone(),
                            value: v.clone(),
                            message: "expected a positive integer".into(),
                        })
                    }
                },
                _ => {
                    m.other.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(m)
    }
}

/// How strictly [`load_safetensors`] and [`load_state_dict`] match tensors to the network.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Tensors whose names start with one of these are ignored (e.g. `fixture.`).
    pub ignore_prefixes: Vec<String>,
    /// Report a problem when the file's `layerzero.arch` names another architecture (tensor
    /// names alone cannot tell `resnet20` from `plain20`).
    pub check_arch: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ignore_prefixes: Vec::new(),
            check_arch: true,
        }
    }
}

impl LoadOptions {
    /// Default options plus an ignored name prefix.
    pub fn ignoring(prefix: impl Into<String>) -> Self {
        LoadOptions::default().ignore(prefix)
    }

    /// Adds an ignored name prefix.
    pub fn ignore(mut self, prefix: impl Into<String>) -> Self {
        self.ignore_prefixes.push(prefix.into());
        self
    }

    fn ignores(&self, name: &str) -> bool {
        self.ignore_prefixes.iter().any(|p| name.starts_with(p))
    }
}

/// Name, dtype (safetensors spelling: `F32`, `I64`, …) and shape of a tensor offered for loading.
struct Offered<'a> {
    name: &'a str,
    dtype: String,
    shape: &'a [usize],
}

fn dtype_name(d: DType) -> String {
    d.as_str().to_ascii_uppercase()
}

/// Every way the offered tensors fail to fit `net`.
fn find_problems(
    net: &dyn Network,
    offered: &[Offered<'_>],
    file_arch: Option<&str>,
    opts: &LoadOptions,
) -> Vec<WeightProblem> {
    let mut problems = Vec::new();
    if opts.check_arch {
        if let Some(found) = file_arch {
            if found != net.spec().name {
                problems.push(WeightProblem::ArchMismatch {
                    expected: net.spec().name.clone(),
                    found: found.to_string(),
                });
            }
        }
    }
    let params = net.params();
    // The file's tensors in the network's own order (its state dict's), then the ones it does
    // not have by name: the safetensors header is a map, so without this the same mismatch
    // would be listed in another order on each run.
    let position: std::collections::HashMap<&str, usize> = params
        .entries()
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name(), i))
        .collect();
    let mut offered: Vec<&Offered<'_>> = offered.iter().collect();
    offered.sort_by_key(|t| (position.get(t.name).copied().unwrap_or(usize::MAX), t.name));
    let mut seen = std::collections::HashSet::new();
    for t in offered {
        if opts.ignores(t.name) {
            continue;
        }
        seen.insert(t.name);
        match params.get(t.name) {
            None => problems.push(WeightProblem::Unexpected {
                name: t.name.to_string(),
                shape: t.shape.to_vec(),
                dtype: t.dtype.clone(),
            }),
            Some(e) => {
                if e.shape() != t.shape {
                    problems.push(WeightProblem::WrongShape {
                        name: t.name.to_string(),
                        expected: e.shape().to_vec(),
                        found: t.shape.to_vec(),
                    });
                }
                let want = dtype_name(e.role().dtype());
                if want != t.dtype {
                    problems.push(WeightProblem::WrongDtype {
                        name: t.name.to_string(),
                        expected: want,
                        found: t.dtype.clone(),
                    });
                }
            }
        }
    }
    for e in params.entries() {
        // PyTorch-derived files from older versions, or hand-made ones, lack the counters;
        // they carry no information the network needs.
        if e.role() != TensorRole::NumBatchesTracked && !seen.contains(e.name()) {
            problems.push(WeightProblem::Missing {
                name: e.name().to_string(),
                expected_shape: e.shape().to_vec(),
                expected_dtype: dtype_name(e.role().dtype()),
            });
        }
    }
    problems
}

/// Loads an in-memory state dict (name → tensor, as [`crate::ParamStore::state_dict`] returns)
/// into `net`. Nothing is changed unless every tensor fits.
pub fn load_state_dict(
    net: &dyn Network,
    tensors: &[(String, Tensor)],
    opts: &LoadOptions,
) -> Result<()> {
    let offered: Vec<Offered<'_>> = tensors
        .iter()
        .map(|(n, t)| Offered {
            name: n,
            dtype: dtype_name(t.dtype()),
            shape: t.dims(),
        })
        .collect();
    let problems = find_problems(net, &offered, None, opts);
    if !problems.is_empty() {
        return Err(ModelError::WeightMismatch {
            origin: "state dict".into(),
            problems,
        });
    }
    for (name, t) in tensors {
        if let Some(e) = net.params().get(name) {
            e.set(t)?;
        }
    }
    Ok(())
}

fn malformed(origin: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::MalformedFile {
        origin: origin.to_string(),
        message: e.to_string(),
    }
}

/// Bytes of the little-endian `u64` that opens a safetensors file and gives the header's length.
const LEN_FIELD: usize = 8;
/// Largest header the safetensors library accepts.
const MAX_HEADER: usize = 100_000_000;

/// The safetensors library's errors say what is wrong but not where or by how much (e.g.
/// `invalid header length`), so when it refuses `bytes` the layout is examined again to name
/// the expected and found values; the library's own message is kept as the cause.
fn layout_error(origin: &str, bytes: &[u8], cause: SafeTensorError) -> ModelError {
    let message = match explain_layout(bytes) {
        Some(why) => format!("{why} (safetensors: {cause})"),
        None => cause.to_string(),
    };
    malformed(origin, message)
}

/// What is wrong with the layout of `bytes` as a safetensors file, in the order the format is
/// read: length field, header text, header entries, tensor offsets, data coverage. `None` when
/// nothing is found (the library's message then stands alone). Only runs on the error path.
fn explain_layout(bytes: &[u8]) -> Option<String> {
    let n = bytes.len();
    let Some(len_field) = bytes.get(..LEN_FIELD) else {
        return Some(format!(
            "expected at least {LEN_FIELD} bytes (the header length), found {n}"
        ));
    };
    let claimed = u64::from_le_bytes(len_field.try_into().ok()?);
    let follow = n - LEN_FIELD;
    if claimed > follow as u64 {
        return Some(format!(
            "the header claims {claimed} bytes but only {follow} follow the {LEN_FIELD}-byte \
             length field (file of {n} bytes: truncated?)"
        ));
    }
    let header_len = claimed as usize;
    if header_len > MAX_HEADER {
        return Some(format!(
            "expected a header of at most {MAX_HEADER} bytes, found one of {header_len}"
        ));
    }
    let header = &bytes[LEN_FIELD..LEN_FIELD + header_len];
    let text = match std::str::from_utf8(header) {
        Ok(t) => t,
        Err(e) => {
            return Some(format!(
                "expected the {header_len}-byte header to be UTF-8 JSON, found invalid UTF-8: {e}"
            ))
        }
    };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Some(format!(
                "expected the {header_len}-byte header to be JSON, found invalid JSON: {e}"
            ))
        }
    };
    let serde_json::Value::Object(entries) = &value else {
        return Some(format!(
            "expected the header to be a JSON object (tensor name → {{dtype, shape, \
             data_offsets}}), found {}",
            excerpt(&value)
        ));
    };
    let data_len = follow - header_len;
    let mut tensors = Vec::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            if let Err(e) = serde_json::from_value::<HashMap<String, String>>(entry.clone()) {
                return Some(format!(
                    "expected `__metadata__` to map names to strings, found {}: {e}",
                    excerpt(entry)
                ));
            }
            continue;
        }
        match serde_json::from_value::<TensorInfo>(entry.clone()) {
            Ok(info) => tensors.push((name.as_str(), info)),
            Err(e) => {
                return Some(format!(
                    "tensor `{name}`: expected {{\"dtype\", \"shape\", \"data_offsets\": \
                     [begin, end]}}, found {}: {e}",
                    excerpt(entry)
                ))
            }
        }
    }
    // The library lays tensors out in the order of their offsets and requires them to tile the
    // data section without gaps or overlaps; check in the same order.
    tensors.sort_by_key(|(_, t)| t.data_offsets);
    let mut next = 0usize;
    let mut previous: Option<&str> = None;
    for (name, t) in &tensors {
        let (begin, end) = t.data_offsets;
        let what = format!(
            "tensor `{name}` ({} {:?}, data_offsets [{begin}, {end}])",
            t.dtype, t.shape
        );
        let bits_each = t.dtype.bitsize();
        let elements = t
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let Some((elements, bits)) = elements.and_then(|e| Some((e, e.checked_mul(bits_each)?)))
        else {
            return Some(format!(
                "{what}: its element count times {bits_each} bits overflows"
            ));
        };
        if bits % 8 != 0 {
            return Some(format!(
                "{what}: expected a whole number of bytes, found {elements} elements of \
                 {bits_each} bits = {bits} bits"
            ));
        }
        let size = bits / 8;
        if end < begin {
            return Some(format!(
                "{what}: expected begin <= end, found the end before the begin"
            ));
        }
        if end - begin != size {
            let per = if bits_each % 8 == 0 {
                format!("{} bytes", bits_each / 8)
            } else {
                format!("{bits_each} bits")
            };
            return Some(format!(
                "{what}: expected {size} bytes ({elements} elements of {per}), found {} \
                 (the data section has {data_len} bytes)",
                end - begin
            ));
        }
        if begin != next {
            let after = match previous {
                Some(p) => format!("where `{p}` ends"),
                None => "the start of the data section".to_string(),
            };
            let gap = if begin > next { "a gap" } else { "an overlap" };
            return Some(format!(
                "{what}: expected to begin at byte {next} ({after}), found {begin} ({gap})"
            ));
        }
        if end > data_len {
            return Some(format!(
                "{what}: expected to lie within the data section of {data_len} bytes, found it \
                 ending at byte {end} (file of {n} bytes: truncated?)"
            ));
        }
        next = end;
        previous = Some(name);
    }
    if next != data_len {
        return Some(format!(
            "expected the tensors to cover the whole data section of {data_len} bytes, found \
             them ending at byte {next} ({} bytes unaccounted for)",
            data_len - next
        ));
    }
    None
}

/// A JSON value for an error message, cut short: headers are untrusted and may be huge.
fn excerpt(v: &serde_json::Value) -> String {
    const MAX: usize = 120;
    let s = v.to_string();
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

fn st_dtype_name(d: Dtype) -> String {
    d.to_string()
}

/// Decodes little-endian bytes of a safetensors tensor. Only the two dtypes networks hold are
/// supported; a byte count that does not match the shape is reported, never trusted.
fn decode(
    origin: &str,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let bad_len = || {
        malformed(
            origin,
            format!(
                "tensor `{name}` ({dtype} {shape:?}): expected {} bytes, found {}",
                n * dtype.bitsize() / 8,
                data.len()
            ),
        )
    };
    let t = match dtype {
        Dtype::F32 => {
            if data.len() != n * 4 {
                return Err(bad_len());
            }
            let v: Vec<f32> = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Tensor::from_vec(v, shape, device)?
        }
        Dtype::I64 => {
            if data.len() != n * 8 {
                return Err(bad_len());
            }
            let v: Vec<i64> = data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            Tensor::from_vec(v, shape, device)?
        }
        other => {
            return Err(ModelError::WeightMismatch {
                origin: origin.to_string(),
                problems: vec![WeightProblem::WrongDtype {
                    name: name.to_string(),
                    expected: "F32 or I64".into(),
                    found: other.to_string(),
                }],
            })
        }
    };
    Ok(t)
}

fn parse<'a>(bytes: &'a [u8], origin: &str) -> Result<(SafeTensors<'a>, WeightsMetadata)> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| layout_error(origin, bytes, e))?;
    let (header_len, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| layout_error(origin, bytes, e))?;
    if let Some(expected) = header.metadata().as_ref().and_then(|h| h.get(META_SHA256)) {
        // `deserialize` checked that the header and the data fit in `bytes`.
        let data = bytes.get(8 + header_len..).unwrap_or_default();
        let found = hex::encode(sha2::Sha256::digest(data));
        if &found != expected {
            return Err(malformed(
                origin,
                format!("checksum mismatch: {META_SHA256} says {expected}, the data gives {found}"),
            ));
        }
    }
    let meta = match header.metadata() {
        Some(h) => WeightsMetadata::from_header(h)?,
        None => WeightsMetadata::default(),
    };
    Ok((st, meta))
}

/// Loads weights from the bytes of a safetensors file into `net`; `origin` names the bytes in
/// error messages. Nothing is changed unless every tensor fits. Returns the header metadata.
pub fn load_safetensors_bytes(
    net: &dyn Network,
    bytes: &[u8],
    origin: &str,
    opts: &LoadOptions,
) -> Result<WeightsMetadata> {
    let (st, meta) = parse(bytes, origin)?;
    let views = st.tensors();
    let offered: Vec<Offered<'_>> = views
        .iter()
        .map(|(n, v)| Offered {
            name: n,
            dtype: st_dtype_name(v.dtype()),
            shape: v.shape(),
        })
        .collect();
    let problems = find_problems(net, &offered, meta.arch.as_deref(), opts);
    if !problems.is_empty() {
        return Err(ModelError::WeightMismatch {
            origin: origin.to_string(),
            problems,
        });
    }
    // Decode everything first, so a decoding failure leaves the network untouched.
    let device = net.params().device();
    let mut decoded = Vec::new();
    for (name, view) in &views {
        if opts.ignores(name) {
            continue;
        }
        decoded.push((
            name.as_str(),
            decode(
                origin,
                name,
                view.dtype(),
                view.shape(),
                view.data(),
                device,
            )?,
        ));
    }
    for (name, t) in decoded {
        if let Some(e) = net.params().get(name) {
            e.set(&t)?;
        }
    }
    Ok(meta)
}

/// The bytes of a weights file, for the `_bytes` readers and loaders (an I/O error names the
/// file): one read where a caller both inspects the header and loads the weights.
pub fn read_weights_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Loads a safetensors file into `net` (see [`load_safetensors_bytes`]).
pub fn load_safetensors(
    net: &dyn Network,
    path: &Path,
    opts: &LoadOptions,
) -> Result<WeightsMetadata> {
    let bytes = read_weights_file(path)?;
    load_safetensors_bytes(net, &bytes, &path.display().to_string(), opts)
}

/// Loads weights named by a path or an `hf://owner/repo[@revision]/path` location into `net`.
pub fn load_weights(
    net: &dyn Network,
    source: &str,
    opts: &LoadOptions,
) -> Result<WeightsMetadata> {
    let path = crate::hub::resolve_weights(source)?;
    load_safetensors(net, &path, opts)
}

/// Tensors and metadata of a safetensors file, as read by [`read_safetensors`].
#[derive(Debug, Clone)]
pub struct SafetensorsContent {
    /// Every tensor, by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The header metadata.
    pub metadata: WeightsMetadata,
}

/// The header metadata of the bytes of a safetensors file, checked as the loaders check them
/// (layout, and the data's checksum where the header has one), without decoding a tensor.
pub fn read_metadata_bytes(bytes: &[u8], origin: &str) -> Result<WeightsMetadata> {
    parse(bytes, origin).map(|(_, meta)| meta)
}

/// Reads every tensor of a safetensors file (F32 and I64 only) onto the CPU, without a network.
pub fn read_safetensors(path: &Path) -> Result<SafetensorsContent> {
    let bytes = read_weights_file(path)?;
    read_safetensors_bytes(&bytes, &path.display().to_string())
}

/// Reads every tensor of the bytes of a safetensors file (see [`read_safetensors`]); `origin`
/// names the bytes in errors.
pub fn read_safetensors_bytes(bytes: &[u8], origin: &str) -> Result<SafetensorsContent> {
    let (st, metadata) = parse(bytes, origin)?;
    let mut tensors = BTreeMap::new();
    for (name, v) in st.tensors() {
        let t = decode(origin, &name, v.dtype(), v.shape(), v.data(), &Device::Cpu)?;
        tensors.insert(name, t);
    }
    Ok(SafetensorsContent { tensors, metadata })
}

/// Creates the network a safetensors file describes (from `layerzero.arch` and
/// `layerzero.num_classes`) through `registry`, and loads the weights into it. `source` is a
/// path or an `hf://` location.
pub fn load_model(
    source: &str,
    device: &Device,
    registry: &ModelRegistry,
) -> Result<(Box<dyn Network>, WeightsMetadata)> {
    let path = crate::hub::resolve_weights(source)?;
    let bytes = read_weights_file(&path)?;
    load_model_bytes(&bytes, &path.display().to_string(), device, registry)
}

/// [`load_model`] on the bytes of a safetensors file; `origin` names the bytes in errors.
///
/// The header is untrusted: before any network is built, `layerzero.num_classes` is checked
/// against the file's size (a classifier with `n` outputs needs at least `4·n` bytes of
/// weights), so a forged class count cannot make us allocate more than the file could hold.
pub fn load_model_bytes(
    bytes: &[u8],
    origin: &str,
    device: &Device,
    registry: &ModelRegistry,
) -> Result<(Box<dyn Network>, WeightsMetadata)> {
    let (_, meta) = parse(bytes, origin)?;
    let missing = |key: &str| ModelError::BadMetadata {
        key: key.to_string(),
        value: String::new(),
        message: format!("{origin} does not say which network it holds"),
    };
    let arch = meta.arch.clone().ok_or_else(|| missing(META_ARCH))?;
    let classes = meta.num_classes.ok_or_else(|| missing(META_NUM_CLASSES))?;
    if classes.saturating_mul(4) > bytes.len() {
        return Err(ModelError::BadMetadata {
            key: META_NUM_CLASSES.to_string(),
            value: classes.to_string(),
            message: format!(
                "{origin} has {} bytes, too few to hold a classifier with {classes} outputs",
                bytes.len()
            ),
        });
    }
    let cfg = ModelConfig::new(classes)
        .with_init(Init::Zeros)
        .with_device(device.clone());
    let net = registry.create(&arch, &cfg)?;
    load_safetensors_bytes(net.as_ref(), bytes, origin, &LoadOptions::default())?;
    Ok((net, meta))
}

/// Serialises `net`'s state dict with `metadata` into safetensors bytes, deterministically (see
/// [`encode_safetensors`]), with the SHA-256 of the data section in the header.
pub fn to_safetensors_bytes(net: &dyn Network, metadata: &WeightsMetadata) -> Result<Vec<u8>> {
    let mut entries: Vec<RawTensor> = Vec::new();
    for (name, t) in net.params().state_dict()? {
        let shape = t.dims().to_vec();
        let flat = t.flatten_all()?;
        let (dtype, bytes) = match t.dtype() {
            DType::F32 => (
                Dtype::F32,
                flat.to_vec1::<f32>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            DType::I64 => (
                Dtype::I64,
                flat.to_vec1::<i64>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            other => {
                return Err(ModelError::BadInput(format!(
                    "cannot save `{name}` of dtype {other:?}"
                )))
            }
        };
        entries.push((name, dtype, shape, bytes));
    }
    encode_safetensors(entries, |data| {
        let mut meta = metadata.to_header();
        meta.insert(META_SHA256.into(), hex::encode(sha2::Sha256::digest(data)));
        meta
    })
}

/// One tensor of a safetensors file: name, dtype, shape and little-endian data.
pub type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Safetensors bytes of `tensors`, with the header metadata that `metadata` returns given the
/// data section as laid out (for a checksum of it). The same tensors and metadata always give
/// the same bytes: tensors by descending alignment, then name (the safetensors library's
/// order), header keys sorted, the data 8-byte aligned. (The library's own `serialize` takes
/// its metadata as a `HashMap` and writes the keys in that map's random order, so two writes
/// of the same checkpoint could differ.)
pub fn encode_safetensors(
    mut tensors: Vec<RawTensor>,
    metadata: impl FnOnce(&[u8]) -> BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    // Eight-byte tensors first keeps every tensor aligned to its element size in the file.
    tensors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let mut data = Vec::new();
    for (_, _, _, bytes) in &tensors {
        data.extend_from_slice(bytes);
    }
    let mut header = serde_json::Map::new();
    let meta: serde_json::Map<String, serde_json::Value> = metadata(&data)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut offset = 0usize;
    for (name, dtype, shape, bytes) in &tensors {
        let end = offset + bytes.len();
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype.to_string(),
                "shape": shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut header =
        serde_json::to_vec(&header).map_err(|e| ModelError::BadInput(e.to_string()))?;
    // Pad with spaces so the data starts 8-byte aligned, as the safetensors writer does.
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Writes `net`'s weights to a safetensors file. The file is written beside its final name
/// (`NAME.tmp-<pid>`), flushed to disk and renamed into place, and the folder is then flushed
/// too (on Unix), so readers never see a partial file and the rename survives a crash.
pub fn save_safetensors(net: &dyn Network, path: &Path, metadata: &WeightsMetadata) -> Result<()> {
    let bytes = to_safetensors_bytes(net, metadata)?;
    let io = |source| ModelError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = crate::atomic::temporary_for(path)
        .ok_or_else(|| ModelError::BadInput(format!("{} is not a file path", path.display())))?;
    // Write, flush to disk, rename, flush the folder: a crash or a full disk leaves the old
    // file (or none), never a partial one, and no temporary file is left behind on error.
    let written = crate::atomic::write_synced(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| crate::atomic::sync_folder(crate::atomic::folder_of(path)));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}
