//! Every integration test of the crate, one module per file, in one
//! binary (see `autotests` in Cargo.toml).

mod multizone;
mod sotw;
mod traffic;
