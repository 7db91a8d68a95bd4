//! The local CHIP Gate mock.
