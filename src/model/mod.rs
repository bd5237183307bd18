//! What the certificates are about: the two-layer ReLU network
//! N(x) = Σ_j v_j ReLU(w_j·x + b_j) ([`net`]), fully connected ReLU nets of
//! any depth with a scalar or multi-class output ([`deep`]), and the
//! clustered data of the paper's Assumption 2.2 ([`data`]).

pub mod data;
pub mod deep;
pub mod net;
pub mod ray;
