//! `cargo xtask readme`: the README's library section as a user's crate would have it.
//!
//! The section "The library in five minutes" gives a `[dependencies]` block and `rust` blocks. A
//! user copies them into one crate, so this builds exactly that: a crate whose `Cargo.toml` has the
//! README's dependencies (with `chip-gate` pointed at this checkout) and whose `main.rs` holds the
//! visible lines of every `rust` block, one after another (the `# ` lines are doctest scaffolding
//! and are left out; `use` lines are merged, as a user would merge them). It must pass
//! `cargo check`: a crate the README forgets to name, or two snippets that clash, fail it.
//!
//! The crate lives in `<target>/readme-consumer/` and builds into a target folder of its own there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The heading of the section whose blocks are checked.
const SECTION: &str = "## The library in five minutes";

/// Builds the consumer crate and runs `cargo check` on it; `Err` says what failed.
pub fn run() -> Result<(), String> {
    let root = crate::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md"))
        .map_err(|e| format!("cannot read README.md: {e}"))?;
    let consumer = assemble(&readme, &root.join("crates/chip-gate"))?;
    let dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => root.join("target"),
    }
    .join("readme-consumer");
    std::fs::create_dir_all(dir.join("src")).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
    std::fs::write(dir.join("Cargo.toml"), &consumer.manifest)
        .map_err(|e| format!("cannot write the consumer's Cargo.toml: {e}"))?;
    std::fs::write(dir.join("src/main.rs"), &consumer.main)
        .map_err(|e| format!("cannot write the consumer's main.rs: {e}"))?;
    // Start from the workspace's lock file, so the consumer resolves to the versions tested here.
    let _ = std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"));
    println!(
        "readme: checking a crate made of README.md's dependencies and {} rust block(s) in {}",
        consumer.blocks,
        dir.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["check", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("RUSTFLAGS")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        println!("readme: the library section builds as one program");
        Ok(())
    } else {
        Err(format!(
            "the README's library section does not build as one program (see {}/src/main.rs)",
            dir.display()
        ))
    }
}

/// The consumer crate's files.
#[derive(Debug)]
pub struct Consumer {
    /// `Cargo.toml`.
    pub manifest: String,
    /// `src/main.rs`.
    pub main: String,
    /// How many `rust` blocks went in.
    pub blocks: usize,
}

/// Builds the consumer crate from the README's text; `chip_gate` is the path of the crate.
pub fn assemble(readme: &str, chip_gate: &Path) -> Result<Consumer, String> {
    let start = readme
        .find(SECTION)
        .ok_or_else(|| format!("README.md has no section {SECTION:?}"))?;
    let rest = &readme[start + SECTION.len()..];
    let section = match rest.find("\n## ") {
        Some(end) => &rest[..end],
        None => rest,
    };
    let blocks = fenced(section);
    let toml = blocks
        .iter()
        .find(|(lang, _)| lang.starts_with("toml"))
        .map(|(_, body)| body.as_str())
        .ok_or("the section has no ```toml block with the dependencies")?;
    let mut dependencies = Vec::new();
    for line in toml.lines() {
        let code = line.split('#').next().unwrap_or("").trim_end();
        if code.trim().is_empty() || code.trim() == "[dependencies]" {
            continue;
        }
        if code.trim_start().starts_with("chip-gate ")
            || code.trim_start().starts_with("chip-gate=")
        {
            let features = code
                .find("features")
                .map(|i| code[i..].trim_end_matches('}').trim().to_owned());
            let path = chip_gate.display().to_string().replace('\\', "/");
            dependencies.push(match features {
                Some(features) => format!("chip-gate = {{ path = \"{path}\", {features} }}"),
                None => format!("chip-gate = {{ path = \"{path}\" }}"),
            });
        } else {
            dependencies.push(code.to_owned());
        }
    }
    if !dependencies.iter().any(|d| d.starts_with("chip-gate ")) {
        return Err("the ```toml block does not name chip-gate".into());
    }
    let rust: Vec<&String> = blocks
        .iter()
        .filter(|(lang, _)| lang.split(',').next() == Some("rust"))
        .map(|(_, body)| body)
        .collect();
    let mut uses = BTreeSet::new();
    let mut items = String::new();
    for body in &rust {
        for line in body.lines() {
            let trimmed = line.trim_start();
            if trimmed == "#" || trimmed.starts_with("# ") {
                continue; // doctest scaffolding, not what a user copies
            }
            if let Some(paths) = use_paths(line) {
                uses.extend(paths);
            } else {
                items.push_str(line);
                items.push('\n');
            }
        }
        items.push('\n');
    }
    let mut main = String::from(
        "//! Written by `cargo xtask readme`: README.md's library section as one program.\n\
         #![allow(dead_code)]\n\n",
    );
    for path in &uses {
        main.push_str(&format!("use {path};\n"));
    }
    main.push('\n');
    main.push_str(&items);
    main.push_str("fn main() {}\n");
    let manifest = format!(
        "[package]\nname = \"readme-consumer\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [workspace]\n\n[dependencies]\n{}\n",
        dependencies.join("\n")
    );
    Ok(Consumer {
        manifest,
        main,
        blocks: rust.len(),
    })
}

/// The fenced blocks of `text`: (info string, body).
fn fenced(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => {
                if let Some(block) = current.take() {
                    out.push(block);
                }
            }
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The full paths a `use` line imports (`use a::{b, c::d};` gives `a::b` and `a::c::d`), or `None`
/// when the line is not a one-line `use`.
fn use_paths(line: &str) -> Option<Vec<String>> {
    let body = line.trim().strip_prefix("use ")?.strip_suffix(';')?;
    match body.split_once("::{") {
        Some((root, list)) => {
            let list = list.strip_suffix('}')?;
            Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| format!("{root}::{p}"))
                    .collect(),
            )
        }
        None => Some(vec![body.trim().to_owned()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_lines_merge() {
        assert_eq!(
            use_paths("use axum::{Router, routing::post};"),
            Some(vec!["axum::Router".into(), "axum::routing::post".into()])
        );
        assert_eq!(
            use_paths("use futures::TryStreamExt;"),
            Some(vec!["futures::TryStreamExt".into()])
        );
        assert_eq!(use_paths("let x = 1;"), None);
    }

    #[test]
    fn the_readme_assembles() {
        let readme = include_str!("../../README.md");
        let consumer = match assemble(readme, Path::new("/x/crates/chip-gate")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert!(consumer.blocks >= 3, "{}", consumer.main);
        assert!(
            consumer
                .manifest
                .contains("chip-gate = { path = \"/x/crates/chip-gate\"")
        );
        assert!(!consumer.main.contains("# fn main"));
        assert_eq!(consumer.main.matches("use chip_gate::Verifier;").count(), 1);
    }
}
