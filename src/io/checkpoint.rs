//! Checkpoints: the networks users hand to kktcert, from any of the files
//! that hold them, and kktcert's own format.
//!
//! kktcert writes safetensors with `W` \[m,d\], `b` \[m\], `v` \[m\] (F64) and
//! string metadata (the key `format` is [`CHECKPOINT_FORMAT`]; informative on
//! load). It reads
//! * that layout, from any program (NumPy, PyTorch after renaming);
//! * a PyTorch state dict with exactly two linear layers, recognised by
//!   shape and order ([`crate::io::layout`]), or named explicitly with
//!   [`TensorNames`] (`--tensors W=…,b=…,v=…[,c=…]`);
//! * an ONNX graph of a two-layer ReLU MLP ([`crate::io::onnx`]);
//!
//! in F16, BF16, F32 or F64. A second layer with a bias gives an output bias
//! c: [`Checkpoint::function`] is N(x) + c exactly, while Problem (2) — and so
//! every KKT routine — is about homogeneous nets, which
//! [`Checkpoint::homogeneous`] enforces.

use crate::error::{Error, Result};
use crate::io::layout::{recognise, recognise_layers, LayerNames, TensorNames};
use crate::io::tensors::{write_tensors, Dim, OwnedTensor, TensorFile};
use crate::model::deep::{DeepNet, Layer};
use crate::model::net::Network;
use nalgebra::{DMatrix, DVector};
use std::collections::BTreeMap;
use std::path::Path;

/// Format tag stored under the metadata key `format`.
pub const CHECKPOINT_FORMAT: &str = "kktcert/two-layer-relu/v1";

/// How to read a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Explicit tensor names (default: recognise the layout).
    pub tensors: Option<TensorNames>,
}

/// A network together with its output bias and provenance metadata.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The network (without its output bias).
    pub net: Network,
    /// c in N(x) + c (0 for kktcert's own nets).
    pub output_bias: f64,
    /// The file's string metadata.
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Wraps a homogeneous network with metadata (the `format` key is added on save).
    pub fn new(net: Network, metadata: BTreeMap<String, String>) -> Self {
        Self {
            net,
            output_bias: 0.0,
            metadata,
        }
    }

    /// Loads and validates a checkpoint, recognising its layout.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Loads with explicit options; `.onnx` files go to the ONNX importer.
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let is_onnx = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        if is_onnx {
            if opts.tensors.is_some() {
                return Err(Error::param(
                    "tensors",
                    "applies to safetensors checkpoints, not ONNX graphs",
                ));
            }
            let (net, output_bias) = crate::io::onnx::load(path)?;
            let mut metadata = BTreeMap::new();
            metadata.insert("source".into(), "onnx".into());
            return Ok(Self {
                net,
                output_bias,
                metadata,
            });
        }
        let f = TensorFile::open(path)?;
        let names = match &opts.tensors {
            Some(n) => n.clone(),
            None => recognise(&f)?,
        };
        let (net, output_bias) = read_net(&f, &names)?;
        Ok(Self {
            net,
            output_bias,
            metadata: f.metadata().into_iter().collect(),
        })
    }

    /// The function the file computes, N(x) + c, as a network: a nonzero c
    /// becomes one constant neuron (w = 0, b = |c|, v = sign c), which
    /// computes c exactly.
    pub fn function(&self) -> Network {
        self.net.with_output_bias(self.output_bias)
    }

    /// The homogeneous network of Problem (2), or an error explaining why a
    /// net with an output bias has no place there.
    pub fn homogeneous(&self, path: &Path, command: &str) -> Result<&Network> {
        if self.output_bias == 0.0 {
            return Ok(&self.net);
        }
        Err(Error::field(
            path,
            "c",
            format!(
                "the net has an output bias c = {:e}; `{command}` works with Problem (2), the max-margin problem over homogeneous nets N(x) = Σ v_j ReLU(w_j·x + b_j), where an output bias has no place (its KKT conditions are stated for 2-homogeneous N). eval, distance and attack accept it; train without the second layer's bias (nn.Linear(m, 1, bias=False)) to certify",
                self.output_bias
            ),
        ))
    }

    /// Saves atomically as F64 with metadata (`c` only when nonzero).
    pub fn save(&self, path: &Path) -> Result<()> {
        let net = &self.net;
        let (m, d) = (net.width(), net.dim());
        let mut meta = self.metadata.clone();
        meta.insert("format".into(), CHECKPOINT_FORMAT.into());
        let mut tensors = vec![
            (
                "W",
                OwnedTensor::f64(vec![m, d], crate::model::data::row_major(net.w())),
            ),
            ("b", OwnedTensor::f64(vec![m], net.b().iter().copied())),
            ("v", OwnedTensor::f64(vec![m], net.v().iter().copied())),
        ];
        if self.output_bias != 0.0 {
            tensors.push(("c", OwnedTensor::f64(vec![1], [self.output_bias])));
        }
        write_tensors(path, &tensors, meta)
    }
}

/// Reads W \[m,d\], b \[m\] (or zeros), v \[m\] or \[1,m\], c \[1\] or [] from `f`.
fn read_net(f: &TensorFile, names: &TensorNames) -> Result<(Network, f64)> {
    let (w, shape) = f.floats(&names.w, &[Dim::Any, Dim::Any])?;
    let (m, d) = (shape[0], shape[1]);
    let b = match &names.b {
        Some(n) => f.floats(n, &[Dim::Is(m)])?.0,
        None => vec![0.0; m],
    };
    let v = match f.floats(&names.v, &[Dim::Is(m)]) {
        Ok((v, _)) => v,
        Err(_) => f.floats(&names.v, &[Dim::Is(1), Dim::Is(m)])?.0,
    };
    let c = match &names.c {
        Some(n) => match f.floats(n, &[Dim::Is(1)]) {
            Ok((c, _)) => c[0],
            Err(_) => f.floats(n, &[])?.0[0],
        },
        None => 0.0,
    };
    let net = Network::new(
        DMatrix::from_row_slice(m, d, &w),
        DVector::from_vec(b),
        DVector::from_vec(v),
    )
    .map_err(|e| Error::file(f.path(), e.to_string()))?;
    Ok((net, c))
}

/// Loads a fully connected ReLU net of any depth: a PyTorch state dict of an
/// `nn.Sequential` of `Linear`/`ReLU`/`Flatten` (recognised by
/// [`crate::io::layout::recognise_layers`]), kktcert's two-layer layout, or
/// an ONNX graph ([`crate::io::onnx::load_layers`]); F16, BF16, F32 or F64.
pub fn load_deep(path: &Path) -> Result<DeepNet> {
    let is_onnx = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if is_onnx {
        return crate::io::onnx::load_layers(path);
    }
    let f = TensorFile::open(path)?;
    let layers = recognise_layers(&f)?
        .iter()
        .map(|names| read_layer(&f, names))
        .collect::<Result<Vec<_>>>()?;
    DeepNet::new(layers).map_err(|e| Error::file(path, e.to_string()))
}

/// Saves a deep net atomically as an F64 PyTorch-layout state dict
/// (`0.weight`, `0.bias`, `2.weight`, … as `nn.Sequential` numbers them),
/// which [`load_deep`] and `torch` (`load_state_dict` after
/// `safetensors.torch.load_file`) read back.
pub fn save_deep(path: &Path, net: &DeepNet, metadata: BTreeMap<String, String>) -> Result<()> {
    let mut names = Vec::new();
    let mut owned = Vec::new();
    for (i, l) in net.layers().iter().enumerate() {
        let (r, c) = l.weight().shape();
        names.push(format!("{}.weight", 2 * i));
        owned.push(OwnedTensor::f64(
            vec![r, c],
            crate::model::data::row_major(l.weight()),
        ));
        if let Some(b) = l.bias() {
            names.push(format!("{}.bias", 2 * i));
            owned.push(OwnedTensor::f64(vec![r], b.iter().copied()));
        }
    }
    let named: Vec<(&str, OwnedTensor)> = names.iter().map(String::as_str).zip(owned).collect();
    write_tensors(path, &named, metadata)
}

/// Whether `path` holds more than the two-layer net's tensors — an ONNX
/// graph, or a safetensors file with three or more `.weight` tensors — so
/// that a failure to read it is best explained by the deep loader.
pub fn looks_deep(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        return true;
    }
    TensorFile::open(path).is_ok_and(|f| {
        f.inventory()
            .iter()
            .filter(|(name, _, _)| name == "weight" || name.ends_with(".weight"))
            .count()
            > 2
    })
}

/// One linear layer: the weight \[out, in\] (or \[in\], one output) and its bias.
fn read_layer(f: &TensorFile, names: &LayerNames) -> Result<Layer> {
    let (w, shape) = f
        .floats(&names.weight, &[Dim::Any, Dim::Any])
        .or_else(|_| {
            let (w, shape) = f.floats(&names.weight, &[Dim::Any])?;
            Ok::<_, Error>((w, vec![1, shape[0]]))
        })?;
    let bias = match &names.bias {
        Some(n) => {
            let vector = f.floats(n, &[Dim::Is(shape[0])]);
            // A scalar output's bias may be stored as a 0-D tensor.
            let scalar = || f.floats(n, &[]).ok().filter(|_| shape[0] == 1);
            match (vector, scalar) {
                (Ok((b, _)), _) => Some(DVector::from_vec(b)),
                (Err(e), scalar) => Some(DVector::from_vec(scalar().ok_or(e)?.0)),
            }
        }
        None => None,
    };
    Layer::new(DMatrix::from_row_slice(shape[0], shape[1], &w), bias)
        .map_err(|e| Error::field(f.path(), &names.weight, e.to_string()))
}

/// Loads the network a file computes, N(x) + c (see [`Checkpoint::function`]).
///
/// ```
/// use kktcert::io::checkpoint::{load_net, Checkpoint};
/// # use kktcert::fit::gd::{train, TrainConfig};
/// # use kktcert::model::data::{Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
/// # let spec = FixtureSpec { format: FIXTURE_FORMAT.into(), k: 4, d: 20, sigma: 0.3, n: 40,
/// #     n_test: 10, seed: 0, means: MeansKind::Orthogonal, labels: LabelRule::Balanced };
/// # let fx = Fixture::generate(spec)?;
/// # let net = train(&fx.train, &TrainConfig { width: 8, ..TrainConfig::default() }, |_, _, _| Ok(()))?.net;
/// let path = std::env::temp_dir().join(format!("kktcert-doc-{}.safetensors", std::process::id()));
/// Checkpoint::new(net.clone(), Default::default()).save(&path)?;
/// let back = load_net(&path)?; // also a PyTorch state dict, or an ONNX graph
/// assert_eq!(back.forward(fx.test.x()), net.forward(fx.test.x()));
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), kktcert::Error>(())
/// ```
pub fn load_net(path: &Path) -> Result<Network> {
    Checkpoint::load(path).map(|c| c.function())
}
