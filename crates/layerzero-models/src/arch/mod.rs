//! Built-in architectures and the registry that creates networks by name (like timm's
//! `create_model`).
//!
//! Names:
//! - `resnet{6n+2}` (`resnet20` … `resnet110`): CIFAR ResNet, option-A shortcuts (`-a` is
//!   accepted as an alias); `resnet{6n+2}-b`: option-B (projection) shortcuts;
//! - `plain{6n+2}`: the same nets without shortcuts;
//! - `vgg11-bn`, `vgg13-bn`, `vgg16-bn`, `vgg19-bn`;
//! - `resnet18`: the common CIFAR ResNet-18;
//! - `wrn{6n+4}-{k}` (`wrn16-4`, `wrn28-10`): wide ResNets.

pub mod resnet;
pub mod vgg;
pub mod wrn;

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Device;

use crate::error::{ModelError, Result};
use crate::init::Init;
use crate::network::{Network, Shortcut};

use self::resnet::{ResNet, ResNetConfig};
use self::vgg::{vgg_config, Vgg};
use self::wrn::WideResNet;

/// How to build a network: everything except the architecture name.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Output classes (10 for CIFAR-10, 100 for CIFAR-100).
    pub num_classes: usize,
    /// Initial weights.
    pub init: Init,
    /// Where the tensors live.
    pub device: Device,
}

impl ModelConfig {
    /// `num_classes` outputs, seed 0, CPU.
    pub fn new(num_classes: usize) -> Self {
        ModelConfig {
            num_classes,
            init: Init::Seeded(0),
            device: Device::Cpu,
        }
    }

    /// Random initial weights from `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.init = Init::Seeded(seed);
        self
    }

    /// Explicit initialisation (e.g. [`Init::Zeros`] before loading weights).
    pub fn with_init(mut self, init: Init) -> Self {
        self.init = init;
        self
    }

    /// Another device.
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
}

/// Builds a network from a [`ModelConfig`]; what [`ModelRegistry::register`] takes.
pub type ModelConstructor = Arc<dyn Fn(&ModelConfig) -> Result<Box<dyn Network>> + Send + Sync>;

/// One line of `layerzero models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// Registry name.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply–accumulates per 32×32 image (convolutions and linear layers).
    pub macs: u64,
    /// Convolutions and linear layers.
    pub weight_layers: usize,
}

/// Built-in names listed by [`ModelRegistry::names`] (any `resnet{6n+2}`, `plain{6n+2}`,
/// `wrn{6n+4}-{k}` is accepted too).
const LISTED: &[&str] = &[
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet20-b",
    "resnet32-b",
    "resnet44-b",
    "resnet56-b",
    "resnet110-b",
    "plain20",
    "plain32",
    "plain44",
    "plain56",
    "plain110",
    "vgg11-bn",
    "vgg13-bn",
    "vgg16-bn",
    "vgg19-bn",
    "resnet18",
    "wrn16-4",
    "wrn28-10",
];

/// A built-in architecture, parsed from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    CifarResNet(usize, Shortcut),
    ResNet18,
    Vgg(usize),
    Wide(usize, usize),
}

impl Builtin {
    fn parse(name: &str) -> Option<Self> {
        let num = |s: &str| -> Option<usize> {
            // Reject signs, leading zeros and empty strings so each net has one name.
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
                return None;
            }
            s.parse().ok()
        };
        let six_n_plus = |d: usize, k: usize| d > k && (d - k).is_multiple_of(6);
        if name == "resnet18" {
            return Some(Builtin::ResNet18);
        }
        if let Some(rest) = name.strip_prefix("resnet") {
            let (d, shortcut) = match rest.split_once('-') {
                None => (rest, Shortcut::Pad),
                Some((d, "a")) => (d, Shortcut::Pad),
                Some((d, "b")) => (d, Shortcut::Projection),
                Some(_) => return None,
            };
            let d = num(d)?;
            return six_n_plus(d, 2).then_some(Builtin::CifarResNet(d, shortcut));
        }
        if let Some(d) = name.strip_prefix("plain") {
            let d = num(d)?;
            return six_n_plus(d, 2).then_some(Builtin::CifarResNet(d, Shortcut::None));
        }
        if let Some(d) = name.strip_prefix("vgg").and_then(|r| r.strip_suffix("-bn")) {
            let d = num(d)?;
            return [11, 13, 16, 19].contains(&d).then_some(Builtin::Vgg(d));
        }
        if let Some((d, k)) = name.strip_prefix("wrn").and_then(|r| r.split_once('-')) {
            let (d, k) = (num(d)?, num(k)?);
            return six_n_plus(d, 4).then_some(Builtin::Wide(d, k));
        }
        None
    }

    /// The one name each net is created under (`resnet20-a` becomes `resnet20`).
    fn canonical_name(self) -> String {
        match self {
            Builtin::CifarResNet(d, Shortcut::Pad) => format!("resnet{d}"),
            Builtin::CifarResNet(d, Shortcut::Projection) => format!("resnet{d}-b"),
            Builtin::CifarResNet(d, Shortcut::None) => format!("plain{d}"),
            Builtin::ResNet18 => "resnet18".into(),
            Builtin::Vgg(d) => format!("vgg{d}-bn"),
            Builtin::Wide(d, k) => format!("wrn{d}-{k}"),
        }
    }

    fn description(self) -> String {
        match self {
            Builtin::CifarResNet(d, Shortcut::Pad) => {
                format!("CIFAR ResNet-{d}, option-A (zero-pad) shortcuts")
            }
            Builtin::CifarResNet(d, Shortcut::Projection) => {
                format!("CIFAR ResNet-{d}, option-B (projection) shortcuts")
            }
            Builtin::CifarResNet(d, Shortcut::None) => {
                format!("ResNet-{d} without shortcuts (plain net)")
            }
            Builtin::ResNet18 => "ResNet-18, CIFAR form (3x3 stem, 64-512 channels)".into(),
            Builtin::Vgg(d) => format!("VGG-{d} with batch norm, CIFAR form"),
            Builtin::Wide(d, k) => format!("Wide ResNet WRN-{d}-{k}, pre-activation"),
        }
    }

    fn build(self, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        let name = self.canonical_name();
        let (n, init, dev) = (cfg.num_classes, cfg.init, &cfg.device);
        Ok(match self {
            Builtin::CifarResNet(d, s) => Box::new(ResNet::new(
                &name,
                &ResNetConfig::cifar(d, s)?,
                n,
                init,
                dev,
            )?),
            Builtin::ResNet18 => {
                Box::new(ResNet::new(&name, &ResNetConfig::resnet18(), n, init, dev)?)
            }
            Builtin::Vgg(d) => Box::new(Vgg::new(&name, &vgg_config(d)?, n, init, dev)?),
            Builtin::Wide(d, k) => Box::new(WideResNet::new(&name, d, k, n, init, dev)?),
        })
    }
}

/// Creates networks by name: the built-ins plus architectures registered at run time.
#[derive(Clone, Default)]
pub struct ModelRegistry {
    custom: BTreeMap<String, (String, ModelConstructor)>,
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRegistry")
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ModelRegistry {
    /// A registry with the built-in architectures only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an architecture under `name`. Fails if the name is a built-in or already taken.
    pub fn register(
        &mut self,
        name: &str,
        description: &str,
        constructor: ModelConstructor,
    ) -> Result<()> {
        if Builtin::parse(name).is_some() || self.custom.contains_key(name) {
            return Err(ModelError::InvalidConfig(format!(
                "architecture name `{name}` is already taken"
            )));
        }
        self.custom
            .insert(name.to_string(), (description.to_string(), constructor));
        Ok(())
    }

    /// Creates the network called `name`.
    pub fn create(&self, name: &str, config: &ModelConfig) -> Result<Box<dyn Network>> {
        if config.num_classes == 0 {
            return Err(ModelError::InvalidConfig("num_classes must be ≥ 1".into()));
        }
        if let Some(b) = Builtin::parse(name) {
            return b.build(config);
        }
        if let Some((_, ctor)) = self.custom.get(name) {
            let net = ctor(config)?;
            // Weight files record `spec().name`, and `load_model` looks that name up here: a
            // network that calls itself otherwise saves files that cannot be loaded back.
            if net.spec().name != name {
                return Err(ModelError::InvalidConfig(format!(
                    "the constructor registered as `{name}` built a network whose \
                     ArchSpec.name is `{}`: expected `{name}` (weight files record that name \
                     and are loaded back by it)",
                    net.spec().name
                )));
            }
            return Ok(net);
        }
        Err(ModelError::UnknownArchitecture {
            name: name.to_string(),
            known: self.names().join(", "),
        })
    }

    /// Names to show users: the listed built-ins, then registered ones.
    pub fn names(&self) -> Vec<String> {
        LISTED
            .iter()
            .map(|s| s.to_string())
            .chain(self.custom.keys().cloned())
            .collect()
    }

    /// Parameter count and MACs of every listed architecture for `num_classes` outputs. Builds
    /// each network with zero weights (no random numbers), so it is fast.
    pub fn summaries(&self, num_classes: usize) -> Result<Vec<ModelSummary>> {
        let cfg = ModelConfig::new(num_classes).with_init(Init::Zeros);
        self.names()
            .into_iter()
            .map(|name| {
                let net = self.create(&name, &cfg)?;
                let description = match Builtin::parse(&name) {
                    Some(b) => b.description(),
                    None => self
                        .custom
                        .get(&name)
                        .map(|(d, _)| d.clone())
                        .unwrap_or_default(),
                };
                let inv = net.inventory();
                Ok(ModelSummary {
                    name,
                    description,
                    params: net.num_params(),
                    macs: inv.total_macs(),
                    weight_layers: inv.iter().filter(|l| l.kind.has_kernel()).count(),
                })
            })
            .collect()
    }
}

/// Creates a built-in network by name (see the module docs for names).
pub fn create_model(name: &str, config: &ModelConfig) -> Result<Box<dyn Network>> {
    ModelRegistry::new().create(name, config)
}

/// Parameter count and MACs of the listed built-in architectures (`layerzero models`).
pub fn list_models(num_classes: usize) -> Result<Vec<ModelSummary>> {
    ModelRegistry::new().summaries(num_classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_one_canonical_form() {
        for n in LISTED {
            let b = Builtin::parse(n).expect(n);
            assert_eq!(b.canonical_name(), *n);
        }
        assert_eq!(
            Builtin::parse("resnet20-a").map(Builtin::canonical_name),
            Some("resnet20".into())
        );
        assert_eq!(
            Builtin::parse("resnet1202"),
            Some(Builtin::CifarResNet(1202, Shortcut::Pad))
        );
        for bad in [
            "resnet21",
            "resnet020",
            "resnet",
            "resnet20-c",
            "plain19",
            "vgg12-bn",
            "vgg16",
            "wrn28",
            "wrn27-10",
            "wrn28-0",
            "wrn28-x",
            "resnet+20",
            "",
        ] {
            assert_eq!(Builtin::parse(bad), None, "{bad}");
        }
    }
}
