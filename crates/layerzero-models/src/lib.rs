//! The networks of the layerzero study ("Is Each Layer Non-trivial in CNN?"): CIFAR ResNets
//! (option A and B shortcuts), their plain counterparts, VGG-BN, ResNet-18 and wide ResNets,
//! behind one [`Network`] trait that the training loop, the ablation engine and users' own
//! architectures share.
//!
//! - **Registry**: [`create_model`] builds a network by name (`resnet20`, `resnet56-b`,
//!   `plain20`, `vgg16-bn`, `resnet18`, `wrn28-10`, …); [`list_models`] gives parameter counts
//!   and MACs; [`ModelRegistry::register`] adds user architectures.
//! - **Inventory**: [`Network::inventory`] describes every conv, linear and batch-norm layer as
//!   data ([`LayerInfo`]: PyTorch name, [`LayerKind`], [`LayerRole`], channels, kernel, stride,
//!   parameters, MACs, whether it changes the channel count).
//! - **Interventions**: [`Network::forward`] takes a [`ForwardMode`] (eval or train batch norm)
//!   and a set of [`Interventions`] (zero a kernel, skip a residual branch, replace a layer's
//!   weights) applied on the fly, without copying weights. The network is a list of segments;
//!   [`Network::forward_from`] re-runs only the segments after a cached activation.
//! - **Weights**: [`save_safetensors`] / [`load_safetensors`] use the names of PyTorch's
//!   `state_dict()`, report every mismatch at once, and accept `hf://owner/repo/path`
//!   locations through [`load_weights`].
//!
//! Architecture invariant: this crate knows nothing about data-set files or the command line;
//! it maps tensors to tensors and weights to and from files it is given.
//!
//! # Example
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use layerzero_models::{create_model, ForwardMode, Intervention, Interventions, ModelConfig};
//!
//! # fn main() -> layerzero_models::Result<()> {
//! let net = create_model("resnet20", &ModelConfig::new(10).with_seed(1))?;
//! assert_eq!(net.num_params(), 269_722);
//!
//! // Zero the first convolution of the second stage, found through the inventory.
//! let conv = net.inventory().by_name("layer2.0.conv1").expect("resnet20 has it");
//! assert!(conv.changes_channels());
//! let zeroed = Interventions::single(Intervention::ZeroKernel(conv.id));
//!
//! let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu)?;
//! let logits = net.forward(&x, ForwardMode::Eval, Interventions::none())?;
//! let ablated = net.forward(&x, ForwardMode::Eval, &zeroed)?;
//! assert_eq!(logits.dims(), &[2, 10]);
//!
//! // Same result from the cached input of the ablated layer's segment.
//! let cached = net.forward_range(0, conv.segment, &x, ForwardMode::Eval, Interventions::none())?;
//! let again = net.forward_from(conv.segment, &cached, ForwardMode::Eval, &zeroed)?;
//! let diff = (ablated - again)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-6);
//! # let _ = DType::F32;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod arch;
pub mod atomic;
mod builder;
mod error;
pub mod hub;
pub mod init;
mod intervention;
mod inventory;
pub mod layers;
mod network;
mod ops;
mod params;
pub mod weights;

pub use arch::{
    create_model, list_models, ModelConfig, ModelConstructor, ModelRegistry, ModelSummary,
};
pub use builder::{Conv2dSpec, NetworkBuilder, NetworkParts, BN_EPS, BN_MOMENTUM};
pub use error::{ModelError, Result, WeightProblem};
pub use init::Init;
pub use intervention::{ForwardCtx, ForwardMode, Intervention, Interventions, WeightOverride};
pub use inventory::{
    BlockId, Inventory, LayerId, LayerInfo, LayerKind, LayerRole, SegmentInfo, SegmentKind,
};
pub use layers::{defer_running_stats, DeferredRunningStats};
pub use network::{ArchSpec, Network, Shortcut};
pub use params::{ParamEntry, ParamStore, TensorRole};
pub use weights::{
    load_model, load_model_bytes, load_safetensors, load_safetensors_bytes, load_state_dict,
    load_weights, read_metadata_bytes, read_safetensors, read_safetensors_bytes, read_weights_file,
    save_safetensors, LoadOptions, WeightsMetadata,
};
