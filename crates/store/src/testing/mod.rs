//! Test helpers for this crate and its users (enable the `test-util` feature):
//!
//! - [`conformance`]: the behaviour every [`crate::ResourceStore`] must show,
//!   as one async function per case plus [`conformance::run_all`];
//! - [`TestPostgres`]: a throwaway PostgreSQL cluster (`initdb` + `pg_ctl`)
//!   on a free loopback port, removed on drop.

pub mod conformance;
mod postgres;

pub use postgres::TestPostgres;
