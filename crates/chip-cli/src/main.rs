//! The `chip` command.
fn main() {}
