//! The home of the chip-gate quickstart, `examples/quickstart.rs`: run it from anywhere in the
//! workspace with `cargo run --example quickstart`.
//!
//! It is a package of its own, with no dev-dependency beyond what its dependencies already bring,
//! because cargo builds an example with its package's dev-dependencies: in `chip-gate` the first
//! run compiled the benchmark and test crates too. This library is empty.
