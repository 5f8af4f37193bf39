//! Integration tests of the engine, as one binary (each links DataFusion).

mod common;
mod errors;
mod host;
mod isolation;
mod model;
mod plan_cache;
mod shared;
