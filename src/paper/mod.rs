//! The paper's objects: the robust network of Theorem 4.1 ([`robust`]), the
//! universal perturbation of Theorem 4.2 ([`attack`]), and the audit of
//! Assumption 2.2 and the dataset properties P1–P6 ([`audit`]).

pub mod attack;
pub mod audit;
pub mod robust;
