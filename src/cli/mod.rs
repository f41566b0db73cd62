//! The management command line (`fluxgate token …`, `fluxgate management …`,
//! `fluxgate login`).

pub mod args;
