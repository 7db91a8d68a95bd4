//! The chip-gate-mock binary.
fn main() {}
