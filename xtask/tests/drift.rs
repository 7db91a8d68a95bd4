//! `cargo test --workspace` catches drift too: the same check as `cargo xtask check`.

#[test]
fn checked_in_client_matches_the_spec() {
    let root = xtask::workspace_root();
    if let Err(error) = xtask::check(
        &root.join(xtask::DEFAULT_SPEC),
        &root.join(xtask::DEFAULT_OUT),
    ) {
        panic!("{error}");
    }
}
