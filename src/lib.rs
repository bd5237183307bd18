//! kktcert: checkable certificates for the claims of Frei, Vardi, Bartlett
//! and Srebro, "The Double-Edged Sword of Implicit Bias" (NeurIPS 2023).
//!
//! The folders follow the pipeline, and data flows one way through them:
//!
//! ```text
//! model ──► io ──► kkt, distance ──► fit ──► paper ──► experiment ──► jobs
//! nets,      files,  certificates     GD,      Thm 4.1/4.2,  sweeps,        shards,
//! datasets   ONNX    (proofs)         polish   audit         reports, SVG   merge
//!            └──────────── linalg (small exact solvers, knows no network) ───────┘
//! ```
//!
//! * [`model`] — the two-layer ReLU network, its forward passes and rays;
//!   the clustered data model and datasets.
//! * [`io`] — safetensors, PyTorch layouts, ONNX, atomic writes, memory checks.
//! * [`linalg`] — the exact small solvers the certificates are built on.
//! * [`kkt`] — certified KKT brackets for Problem (2).
//! * [`distance`] — certified exact minimal ℓ2 flip distances.
//! * [`fit`] — gradient descent and the polish toward a certified KKT point.
//! * [`paper`] — Theorem 4.1's robust net, Theorem 4.2's universal attack,
//!   the audit of Assumption 2.2 and P1–P6.
//! * [`experiment`] — the `reproduce` sweep, GD paths, tables and figures.
//! * [`jobs`] — sharding a job over machines and merging its outputs.
//!
//! The mathematics is in `docs/SPEC.md`.

#![warn(missing_docs)]

pub mod distance;
pub mod error;
pub mod experiment;
pub mod fit;
pub mod io;
pub mod jobs;
pub mod kkt;
pub mod linalg;
pub mod model;
pub mod paper;

pub use error::{Error, Result};

#[cfg(feature = "python")]
mod python;
