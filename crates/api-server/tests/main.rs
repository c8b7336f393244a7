//! Every integration test of the crate, one module per file, in one
//! binary (see `autotests` in Cargo.toml).

mod common;
mod federation;
mod inspect;
mod openapi;
mod rest;
