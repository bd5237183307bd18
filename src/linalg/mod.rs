//! The exact small solvers the certificates are built on; none of them
//! knows about networks.
//!
//! * [`qp_capped`] — the convex QP min ½zᵀHz − gᵀz over z ≥ 0 with rows
//!   that cap one variable by another (z_a ≤ c·z_m) and a few general rows:
//!   what both certificates' duals are (see `capped`).
//! * [`nnls`] and [`ldp`] — Lawson–Hanson's NNLS and least-distance program
//!   on the matrix itself.
//! * `Cholesky` — a blocked dense factorisation for the distance search's
//!   quadratic bound; `factor` — an updated one for the active sets.
//! * [`lbfgs`] — L-BFGS for the polish and the quadratic bound.
//! * `product` — strided dgemm for the big products.
//!
//! Why hand-written: the certificates need the *exact* active set (so that
//! the multipliers are those of a vertex of the KKT system, not an
//! interior-point approximation), and the problems are small and dense
//! (n ≤ a few thousand) while their number is large (one per node in the
//! distance search). Callers certify the results independently of these
//! solvers (see `kkt` and `distance`).

#[cfg(test)]
mod active_set;
mod capped;
mod cholesky;
mod factor;
pub mod lbfgs;
mod lstsq;
mod product;

pub use capped::{qp_capped, Cap, CappedSolution, Constraints};
pub(crate) use cholesky::Cholesky;
pub use lstsq::{ldp, nnls, Ldp};
pub(crate) use product::product;

/// Relative relaxation of the rows' right-hand sides against degeneracy.
const DEGENERACY_SHIFT: f64 = 1e-12;

/// Relative tolerance on multipliers and feasibility inside the active set.
const TOL: f64 = 1e-13;

/// A Cholesky pivot whose square keeps at most this share of its diagonal
/// is *clamped*: its column depends on those before it to working
/// precision, and the matrix is treated as singular (duplicated columns).
const CLAMPED_PIVOT: f64 = 1e-10;

/// How hard [`qp_capped`] works on the end game.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Re-solve the final working set on the exact rows and continue
    /// (rounding-level accuracy).
    Exact,
    /// Stop after phase 1: a feasible, near-optimal z — enough wherever any
    /// dual-feasible point gives a valid bound, as inside a branch-and-bound.
    Fast,
}
