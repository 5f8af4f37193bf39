//! No code: this crate exists for its `Cargo.toml`, which gives every
//! workspace member the same features of DataFusion's dependencies, so
//! DataFusion is compiled once per profile whichever member is built.
