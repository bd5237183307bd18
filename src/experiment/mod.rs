//! The experiment: the `reproduce` sweep over clustered fixtures
//! ([`sweep`], its cells chosen by [`regime`], the double edge measured on
//! the same points by [`edge`]), certificates along a GD path ([`path`]),
//! and the SVG figures ([`figures`]).

pub mod edge;
pub mod figures;
pub mod path;
pub mod regime;
pub mod render;
pub mod sweep;
