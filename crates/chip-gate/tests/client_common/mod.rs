//! Not a helper module of this crate's tests (they use `common`): `chip-gate-quickstart`'s test
//! includes this file by path for the scripted server, which now lives in `common/script.rs`.

#![allow(dead_code, clippy::unwrap_used)]

#[path = "../common/script.rs"]
mod script;

pub use script::*;
