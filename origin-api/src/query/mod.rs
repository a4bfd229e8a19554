//! The read side: one JSON query model and the analyses built on it (trends, funnels, retention,
//! paths, lifecycle), each a module with its pure maths and its SQL.

pub mod cohorts;
pub mod filter;
pub mod funnel;
pub mod goals;
pub mod lifecycle;
pub mod model;
pub mod paths;
pub mod retention;
pub mod rollup;
pub mod sets;
pub mod time;
pub mod trends;
