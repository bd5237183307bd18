//! Fitting networks: full-batch gradient descent ([`gd`]), the polish that
//! carries a trained net to a certified KKT point of Problem (2)
//! ([`polish`], finished by the cone program of [`cone`]), and the span
//! form that makes both independent of the input dimension ([`span`]); and
//! the augmented-Lagrangian polish of deep nets ([`deep`]).

pub mod cone;
pub mod deep;
pub mod gd;
pub mod polish;
pub mod span;
