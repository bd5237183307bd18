//! Checkpoints: safetensors files with tensors `W` [m,d], `b` [m], `v` [m]
//! (F32 or F64 on input, F64 on output) and string metadata.
//!
//! Any program that writes those three names can hand a network to kktcert
//! (see `scripts/interop.py`). The metadata key `format` is set to
//! [`CHECKPOINT_FORMAT`] on save; on load it is informative only, so that
//! checkpoints from PyTorch or NumPy without it still load.

use crate::error::{Error, Result};
use crate::net::Network;
use crate::tensors::{write_tensors, Dim, OwnedTensor, TensorFile};
use nalgebra::{DMatrix, DVector};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Format tag stored under the metadata key `format`.
pub const CHECKPOINT_FORMAT: &str = "kktcert/two-layer-relu/v1";

/// A network together with its provenance metadata.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub net: Network,
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Wraps a network with metadata (the `format` key is added on save).
    pub fn new(net: Network, metadata: BTreeMap<String, String>) -> Self {
        Self { net, metadata }
    }

    /// Loads and validates a checkpoint.
    pub fn load(path: &Path) -> Result<Self> {
        let f = TensorFile::open(path)?;
        let (w, shape) = f.floats("W", &[Dim::Any, Dim::Any])?;
        let m = shape[0];
        let (b, _) = f.floats("b", &[Dim::Is(m)])?;
        let (v, _) = f.floats("v", &[Dim::Is(m)])?;
        let net = Network::new(
            DMatrix::from_row_slice(m, shape[1], &w),
            DVector::from_vec(b),
            DVector::from_vec(v),
        )
        .map_err(|e| Error::file(path, e.to_string()))?;
        Ok(Self {
            net,
            metadata: f.metadata().into_iter().collect(),
        })
    }

    /// Saves atomically as F64 with metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let net = &self.net;
        let (m, d) = (net.width(), net.dim());
        let mut meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        meta.insert("format".into(), CHECKPOINT_FORMAT.into());
        write_tensors(
            path,
            &[
                (
                    "W",
                    OwnedTensor::f64(vec![m, d], crate::data::row_major(net.w())),
                ),
                ("b", OwnedTensor::f64(vec![m], net.b().iter().copied())),
                ("v", OwnedTensor::f64(vec![m], net.v().iter().copied())),
            ],
            meta,
        )
    }
}

/// Loads just the network of a checkpoint.
pub fn load_net(path: &Path) -> Result<Network> {
    Checkpoint::load(path).map(|c| c.net)
}
