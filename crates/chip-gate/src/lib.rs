//! chip-gate: CHIP (chip-in.asia) webhooks for Rust.
//!
//! (Crate documentation is written as the modules land.)

// Modules: each line is owned by the work that adds the module.
