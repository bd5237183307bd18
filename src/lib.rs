//! kktcert: checkable certificates for the claims of Frei, Vardi, Bartlett
//! and Srebro, "The Double-Edged Sword of Implicit Bias" (NeurIPS 2023).
//!
//! Data flows one way: [`data`] (fixtures) → [`net`] / [`checkpoint`] /
//! [`train`] (networks) → [`kkt`], [`distance`], [`attack`], [`audit`]
//! (certificates and measurements) → [`report`]. The exact small solvers
//! live in [`linalg`]. The mathematics is in `docs/SPEC.md`.

pub mod attack;
pub mod audit;
pub mod checkpoint;
pub mod data;
pub mod distance;
pub mod error;
pub mod figures;
pub mod finish;
pub mod kkt;
pub mod layout;
pub mod lbfgs;
pub mod linalg;
pub mod net;
pub mod onnx;
pub mod polish;
pub mod quadratic;
pub mod regime;
pub mod report;
pub mod resources;
pub mod robust;
pub mod series;
pub mod shard;
pub mod span;
pub mod tensors;
pub mod train;

pub use error::{Error, Result};

#[cfg(feature = "python")]
mod python;
