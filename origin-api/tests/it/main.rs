//! Integration tests of the origin: a real PostgreSQL per test binary, a database per test,
//! the real router on a real socket.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod analysis;
mod catalog;
mod cohorts;
mod embedded;
mod fault;
mod goals;
mod identity;
mod ingest;
mod query;
mod query_oracle;
mod rollups;
mod sequences;
mod storage;
mod support;
