//! Every integration test of kumactl, one module per file, in one binary
//! (see `autotests` in Cargo.toml).

mod cli;
mod resources;
mod support;
