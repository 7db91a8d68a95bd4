//! `cargo xtask evolve`: the scripted walk through spec changes that shows regeneration is safe.
//!
//! 1. Each breaking mutation ([`crate::mutations`]) is applied to the spec and diffed: the walk fails
//!    unless the diff names it as breaking, with the bump it needs.
//! 2. Every additive mutation is applied at once to the spec of a copy of the workspace (the files
//!    git knows, as they are in the working tree), then, in the copy, exactly what a user does:
//!    `cargo xtask generate`, then `cargo build --all-targets` and `cargo test` of the workspace
//!    (the xtask aside, which `generate` builds and whose own tests pin the spec they were written
//!    for, but for its drift test, which runs; and the inbox's tests, which test databases and
//!    crashes rather than the spec), with no other edit.
//!    The walk fails if anything does not build or a test fails.
//!
//! The copy lives in `<target>/evolve/workspace` and builds into `<target>/evolve/target`: a target
//! folder of its own, because the copy's binaries (this xtask, `chip`, the examples) have the same
//! names as the workspace's and would otherwise replace them. It is kept between runs, so only the
//! first walk on a machine builds the dependencies; what the copy's own crates link (test binaries,
//! examples, the CLI) is rebuilt by every walk anyway, so the walk removes it before and after, and
//! builds without debug information. Kept, those binaries (one set per walk whose dependencies
//! changed) filled the disk of a CI machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::diff::{self, Impact, Version};
use crate::mutations::{self, Mutation};

/// Runs the walk; `Err` says what failed.
pub fn run() -> Result<(), String> {
    let root = crate::workspace_root();
    let spec_path = root.join(crate::DEFAULT_SPEC);
    let text = std::fs::read_to_string(&spec_path)
        .map_err(|e| format!("cannot read {}: {e}", spec_path.display()))?;
    let spec = crate::load_document(&text, crate::DEFAULT_SPEC).map_err(|e| e.to_string())?;
    let version = std::fs::read_to_string(root.join("Cargo.toml"))
        .ok()
        .and_then(|t| crate::workspace_version(&t))
        .unwrap_or(Version {
            major: 0,
            minor: 1,
            patch: 0,
        });
    let all = mutations::all();

    println!("== breaking changes are named before they land\n");
    for mutation in all.iter().filter(|m| m.breaking) {
        let changed = mutated(&spec, [mutation])?;
        let found = diff::diff(&spec, &changed);
        println!("-- {}\n{}", mutation.name, found.report(Some(version)));
        let named = found
            .breaking()
            .any(|c| c.place.starts_with(mutation.place));
        if !named || found.impact() != Some(Impact::Breaking) {
            return Err(format!(
                "`{}` was not named as breaking at {}",
                mutation.name, mutation.place
            ));
        }
    }

    println!("== additive changes build and pass the tests with no other edit\n");
    let additive: Vec<&Mutation> = all.iter().filter(|m| !m.breaking).collect();
    let changed = mutated(&spec, additive.iter().copied())?;
    let found = diff::diff(&spec, &changed);
    println!("{}", found.report(Some(version)));
    if found.impact() != Some(Impact::Additive) {
        return Err("the additive mutations were not all classified as additive".into());
    }
    let evolve = target_dir(&root).join("evolve");
    let copy = evolve.join("workspace");
    let target = evolve.join("target");
    copy_workspace(&root, &copy)?;
    remove_linked_outputs(&target)?;
    let yaml = serde_norway::to_string(&changed).map_err(|e| e.to_string())?;
    std::fs::write(copy.join(crate::DEFAULT_SPEC), yaml)
        .map_err(|e| format!("cannot write the mutated spec: {e}"))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for args in [
        &["xtask", "generate"][..],
        // Without the xtask, as the tests below: leaving a package out changes which features
        // of the shared dependencies are on, and a build with it would be rebuilt for the tests.
        // The xtask is built by `generate` above and its drift test below.
        &[
            "build",
            "--workspace",
            "--exclude",
            "xtask",
            "--all-targets",
        ],
        // The inbox's tests are about databases and crashes, not the spec; it is built above.
        &[
            "test",
            "--workspace",
            "--exclude",
            "xtask",
            "--exclude",
            "chip-gate-inbox",
        ],
        &["test", "-p", "xtask", "--test", "drift"],
    ] {
        println!("\n$ cargo {} (in {})", args.join(" "), copy.display());
        let status = Command::new(&cargo)
            .args(args)
            .current_dir(&copy)
            .env("CARGO_TARGET_DIR", &target)
            // The walk asks whether it builds and passes; nobody debugs the copy. Without debug
            // information (and incremental caches) its binaries take a fifth of the disk.
            .env("CARGO_PROFILE_DEV_DEBUG", "false")
            .env("CARGO_INCREMENTAL", "0")
            // The copy's tests need no database server: the PostgreSQL ones skip themselves.
            .env_remove("CHIP_INBOX_TEST_POSTGRES_URL")
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            // The copy's binaries are left for a look at the failure.
            return Err(format!(
                "`cargo {}` failed after additive spec changes: something in the workspace \
                 depends on the spec more tightly than it should (a struct literal or an exhaustive \
                 match on a generated type?)",
                args.join(" ")
            ));
        }
    }
    remove_linked_outputs(&target)?;
    println!("\nevolve: additive changes build and pass; breaking changes are named");
    Ok(())
}

/// Removes what a build of the copy linked under `target`: the executables of `debug/deps` (test
/// binaries and the CLI; libraries and build scripts have other names or folders),
/// `debug/examples`, and incremental caches. The next walk relinks them from its fresh copy.
fn remove_linked_outputs(target: &Path) -> Result<(), String> {
    let debug = target.join("debug");
    for folder in ["deps", "examples"] {
        let Ok(entries) = std::fs::read_dir(debug.join(folder)) else {
            continue; // not built yet
        };
        for entry in entries.flatten() {
            let linked = entry.file_type().is_ok_and(|t| t.is_file())
                && !entry.file_name().to_string_lossy().contains('.');
            if linked {
                std::fs::remove_file(entry.path())
                    .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
            }
        }
    }
    let incremental = debug.join("incremental");
    if incremental.exists() {
        std::fs::remove_dir_all(&incremental)
            .map_err(|e| format!("cannot remove {}: {e}", incremental.display()))?;
    }
    Ok(())
}

/// The spec with `changes` applied.
fn mutated<'a>(
    spec: &Value,
    changes: impl IntoIterator<Item = &'a Mutation>,
) -> Result<Value, String> {
    let mut changed = spec.clone();
    for mutation in changes {
        (mutation.apply)(&mut changed).map_err(|e| format!("{}: {e}", mutation.name))?;
    }
    Ok(changed)
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => root.join("target"),
    }
}

/// Copies the files git knows (tracked, or new and not ignored), as they are now, into `copy`.
fn copy_workspace(root: &Path, copy: &Path) -> Result<(), String> {
    if copy.exists() {
        std::fs::remove_dir_all(copy)
            .map_err(|e| format!("cannot clear {}: {e}", copy.display()))?;
    }
    let listing = crate::git(&[
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
    ])?;
    for name in listing.split('\0').filter(|n| !n.is_empty()) {
        let from = root.join(name);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let to = copy.join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::copy(&from, &to).map_err(|e| format!("cannot copy {name}: {e}"))?;
    }
    Ok(())
}
