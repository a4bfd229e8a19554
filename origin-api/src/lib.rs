//! The Nexus origin: ingest, storage on PostgreSQL, and queries, as a library so that the
//! integration tests drive the same code the binary runs.

pub mod config;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod query;
pub mod serve;
pub mod store;
pub mod synth;
