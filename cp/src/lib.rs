//! The kuma-cp binary's library half: configuration and component wiring, so
//! tests and benchmarks can start a control plane in-process.

pub mod config;
pub mod diagnostics;
pub mod run;
