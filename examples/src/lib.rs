//! Runnable examples of embedding tenantfusion; see the files beside this
//! crate's `Cargo.toml` and run them with
//! `cargo run -p tenantfusion-examples --example NAME`.
