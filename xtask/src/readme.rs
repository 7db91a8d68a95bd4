//! `cargo xtask readme`: every README as a newcomer reads it on GitHub and pastes from it.
//!
//! For each `README.md` of the repository (the root and every crate's):
//!
//! - **Rust blocks build as shown.** Each ```` ```rust ```` block is a whole `src/main.rs`: it is
//!   built on its own, exactly as written (no line hidden: GitHub shows rustdoc's `# ` lines, so a
//!   README has none), in a crate whose `Cargo.toml` holds the README's own `[dependencies]` block.
//!   The workspace's crates there must come from `git = "<the repository>"` (they are not on
//!   crates.io before their first release); the check points those lines at this checkout. A
//!   README with Rust blocks and no `[dependencies]` block fails.
//! - **Links work on GitHub and in rustdoc** (the READMEs are crate docs too): every link is
//!   `http(s)://`, a `#heading` of the same page, or a relative path to a file that exists; an
//!   intra-doc form (`` [`Inbox`] ``, `[text](chip_gate::Verifier)`) is refused, since GitHub
//!   shows it literally or as a broken link.
//! - **The root README lists CHIP's event names** (its section "CHIP's event names") exactly as
//!   the spec's `EventName` enum does, in order.
//!
//! The crates live in `<target>/readme-consumer/` (one workspace, one crate per README, one binary
//! per block) and build into a target folder of their own there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The section of the root README that lists the event names.
pub const EVENTS_SECTION: &str = "## CHIP's event names";

/// The workspace's crates, which a README must take from the repository (by `git`).
const OUR_CRATES: [&str; 5] = [
    "chip-gate",
    "chip-gate-api",
    "chip-gate-mock",
    "chip-gate-inbox",
    "chip-cli",
];

/// Checks every README, then builds every Rust block; `Err` lists what failed.
pub fn run() -> Result<(), String> {
    let root = crate::workspace_root();
    let repository = repository(&root)?;
    let spec = std::fs::read_to_string(root.join(crate::DEFAULT_SPEC))
        .map_err(|e| format!("cannot read {}: {e}", crate::DEFAULT_SPEC))?;
    let mut problems = Vec::new();
    let mut consumers = Vec::new();
    for path in readmes(&root) {
        let shown = crate::display_path(&path);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("cannot read {shown}: {e}"));
                continue;
            }
        };
        let folder = path.parent().unwrap_or(&root);
        problems.extend(check_links(&shown, &text, folder));
        if path == root.join("README.md") {
            problems.extend(check_event_names(&text, &spec));
        }
        match assemble(&shown, &text, &root, &repository) {
            Ok(Some(consumer)) => consumers.push(consumer),
            Ok(None) => {}
            Err(mut found) => problems.append(&mut found),
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "the READMEs have {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ));
    }
    build(&root, &consumers)
}

/// Writes the consumer workspace and runs `cargo check` on it.
fn build(root: &Path, consumers: &[Consumer]) -> Result<(), String> {
    let dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => root.join("target"),
    }
    .join("readme-consumer");
    // Start clean (a block removed from a README must not linger), but keep the build folder.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name != "target" && name != "Cargo.lock" {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
    let write = |path: PathBuf, text: &str| {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let members: Vec<String> = consumers
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    write(
        dir.join("Cargo.toml"),
        &format!(
            "# Written by `cargo xtask readme`: one crate per README, one binary per Rust block.\n\
             [workspace]\nresolver = \"3\"\nmembers = [{}]\n",
            members.join(", ")
        ),
    )?;
    let mut blocks = 0;
    for consumer in consumers {
        write(
            dir.join(&consumer.name).join("Cargo.toml"),
            &consumer.manifest,
        )?;
        for (file, code) in &consumer.blocks {
            write(dir.join(&consumer.name).join("src/bin").join(file), code)?;
            blocks += 1;
        }
    }
    // Start from the workspace's lock file, so the consumers resolve to the versions tested here.
    let _ = std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"));
    println!(
        "readme: building {blocks} Rust block(s) of {} README(s), each as its own program, in {}",
        consumers.len(),
        dir.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["check", "--quiet", "--workspace", "--bins"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("RUSTFLAGS")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        println!(
            "readme: every Rust block builds as shown, links work on GitHub and in rustdoc, and \
             the event names match the spec"
        );
        Ok(())
    } else {
        Err(format!(
            "a README's Rust block does not build as shown (the file named above is the block, \
             named after the README and its first line: {}/<readme>/src/bin/line_N.rs)",
            dir.display()
        ))
    }
}

/// The README files of the repository: the root's and every one under `crates/` (build output
/// left out).
pub fn readmes(root: &Path) -> Vec<PathBuf> {
    let mut found = vec![root.join("README.md")];
    let mut folders = vec![root.join("crates")];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "target"
                    && name != "node_modules"
                    && !name.to_string_lossy().starts_with('.')
                {
                    folders.push(path);
                }
            } else if name == "README.md" {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `[workspace.package] repository` of the root `Cargo.toml`.
fn repository(root: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml"))
        .map_err(|e| format!("cannot read Cargo.toml: {e}"))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("repository"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| "Cargo.toml has no [workspace.package] repository".to_owned())
}

/// One README's consumer crate.
#[derive(Debug)]
pub struct Consumer {
    /// The crate's (and its folder's) name.
    pub name: String,
    /// `Cargo.toml`.
    pub manifest: String,
    /// `src/bin/<file>` and its code, one per Rust block.
    pub blocks: Vec<(String, String)>,
}

/// The consumer crate of the README at `shown` (whose text is `readme`), or `None` when it has
/// no Rust block; `Err` lists what makes it unbuildable as a newcomer would paste it.
pub fn assemble(
    shown: &str,
    readme: &str,
    root: &Path,
    repository: &str,
) -> Result<Option<Consumer>, Vec<String>> {
    let fences = fenced(readme);
    let rust: Vec<&Fence> = fences.iter().filter(|f| is_rust(&f.info)).collect();
    if rust.is_empty() {
        return Ok(None);
    }
    let mut problems = Vec::new();
    let Some(toml) = fences
        .iter()
        .find(|f| f.info.starts_with("toml") && f.body.contains("[dependencies]"))
    else {
        return Err(vec![format!(
            "{shown}: {} Rust block(s) but no ```toml block with the [dependencies] they need",
            rust.len()
        )]);
    };
    let mut dependencies = Vec::new();
    for (i, line) in toml.body.lines().enumerate() {
        let line_no = toml.line + 1 + i;
        let code = line.split('#').next().unwrap_or("").trim_end();
        let trimmed = code.trim();
        if trimmed.is_empty() || trimmed.starts_with('[') {
            continue;
        }
        let key = trimmed.split('=').next().unwrap_or("").trim();
        if OUR_CRATES.contains(&key) {
            let git = format!("git = \"{repository}\"");
            if !code.contains(&git) {
                problems.push(format!(
                    "{shown}:{line_no}: {key} is not on crates.io before its first release: take \
                     it with {git} (the repository in Cargo.toml)"
                ));
                continue;
            }
            let path = root.join("crates").join(key);
            let path = path.display().to_string().replace('\\', "/");
            dependencies.push(code.replace(&git, &format!("path = \"{path}\"")));
        } else {
            dependencies.push(code.to_owned());
        }
    }
    let mut blocks = Vec::new();
    for fence in &rust {
        for (i, line) in fence.body.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed == "#" || trimmed.starts_with("# ") {
                problems.push(format!(
                    "{shown}:{}: a `# ` line is hidden by rustdoc but shown on GitHub: write the \
                     whole program in the block",
                    fence.line + 1 + i
                ));
            }
        }
        blocks.push((format!("line_{}.rs", fence.line), fence.body.clone()));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let stem = shown.trim_end_matches("README.md").trim_end_matches('/');
    let name = if stem.is_empty() {
        "readme-root".to_owned()
    } else {
        format!(
            "readme-{}",
            stem.trim_start_matches("crates/").replace('/', "-")
        )
    };
    let manifest = format!(
        "# Written by `cargo xtask readme` from {shown}'s [dependencies] block.\n\
         [package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\
         autobins = true\n\n[dependencies]\n{}\n",
        dependencies.join("\n")
    );
    Ok(Some(Consumer {
        name,
        manifest,
        blocks,
    }))
}

/// Whether a fence's info string makes it a Rust block (as rustdoc and GitHub read it).
fn is_rust(info: &str) -> bool {
    info.split([',', ' ']).next() == Some("rust")
}

/// A fenced block: its info string, its body, and the line of its opening fence (1-based).
#[derive(Debug)]
struct Fence {
    info: String,
    body: String,
    line: usize,
}

/// The fenced blocks of `text`.
fn fenced(text: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut current: Option<Fence> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => {
                current = Some(Fence {
                    info: info.trim().to_owned(),
                    body: String::new(),
                    line: i + 1,
                });
            }
            (Some(_), Some(_)) => {
                if let Some(block) = current.take() {
                    out.push(block);
                }
            }
            (Some(fence), None) => {
                fence.body.push_str(line);
                fence.body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The lines of `text`, with those of fenced blocks blanked (so line numbers stay).
fn prose(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            out.push(String::new());
            continue;
        }
        out.push(if in_fence {
            String::new()
        } else {
            line.to_owned()
        });
    }
    out
}

/// Links that work in rustdoc only (or nowhere): intra-doc forms and relative targets that are
/// not files of the repository.
pub fn check_links(shown: &str, text: &str, folder: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let lines = prose(text);
    let joined = lines.join("\n");
    let line_of = |offset: usize| joined[..offset].matches('\n').count() + 1;
    // `[`Name`]` with no `(target)`: rustdoc's intra-doc shorthand, shown literally on GitHub.
    let mut from = 0;
    while let Some(found) = joined[from..].find("[`") {
        let start = from + found;
        from = start + 2;
        let Some(close) = joined[from..].find("`]") else {
            break;
        };
        let end = from + close + 2;
        let name = &joined[start..end];
        if name.contains('\n') || name[2..name.len() - 2].contains('`') {
            continue;
        }
        if !joined[end..].starts_with('(') && !joined[end..].starts_with('[') {
            problems.push(format!(
                "{shown}:{}: {name} is rustdoc's intra-doc shorthand, shown as is on GitHub: \
                 write `{}` (code, no brackets) or a link to docs.rs or a file",
                line_of(start),
                &name[2..name.len() - 2]
            ));
        }
    }
    // `[text](target)`: the target must work on GitHub and in rustdoc alike.
    let mut from = 0;
    while let Some(found) = joined[from..].find("](") {
        let start = from + found + 2;
        from = start;
        let Some(close) = joined[start..].find(')') else {
            break;
        };
        let target = joined[start..start + close].trim();
        let target = target.split_whitespace().next().unwrap_or("");
        if target.starts_with("http://")
            || target.starts_with("https://")
            || target.starts_with("mailto:")
            || target.starts_with('#')
        {
            continue;
        }
        let file = target.split('#').next().unwrap_or("");
        let exists = !file.is_empty()
            && (file.contains('/') || file.contains('.'))
            && folder.join(file).exists();
        if !exists {
            problems.push(format!(
                "{shown}:{}: the link target `{target}` is neither a web address, a #heading nor \
                 a file of the repository (an intra-doc path works in rustdoc only): link to \
                 docs.rs or a file, or write the name as code",
                line_of(start)
            ));
        }
    }
    problems
}

/// The event names of the spec's `EventName` enum, in order.
pub fn spec_event_names(spec: &str) -> Result<Vec<String>, String> {
    let document = crate::load_document(spec, crate::DEFAULT_SPEC).map_err(|e| e.to_string())?;
    let names = document
        .pointer("/components/schemas/EventName/enum")
        .and_then(|v| v.as_array())
        .ok_or("the spec has no components/schemas/EventName enum")?;
    Ok(names
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

/// The names listed in the README's event-name section (its first fenced block).
pub fn readme_event_names(readme: &str) -> Result<Vec<String>, String> {
    let start = readme
        .find(EVENTS_SECTION)
        .ok_or_else(|| format!("README.md has no section {EVENTS_SECTION:?}"))?;
    let rest = &readme[start + EVENTS_SECTION.len()..];
    let section = rest.find("\n## ").map_or(rest, |end| &rest[..end]);
    let block = fenced(section)
        .into_iter()
        .next()
        .ok_or_else(|| format!("README.md's section {EVENTS_SECTION:?} has no fenced list"))?;
    Ok(block
        .body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Whether the root README lists exactly the spec's event names, in its order.
pub fn check_event_names(readme: &str, spec: &str) -> Vec<String> {
    let (listed, known) = match (readme_event_names(readme), spec_event_names(spec)) {
        (Ok(listed), Ok(known)) => (listed, known),
        (Err(e), _) | (_, Err(e)) => return vec![e],
    };
    if listed == known {
        return Vec::new();
    }
    let missing: Vec<&String> = known.iter().filter(|n| !listed.contains(n)).collect();
    let extra: Vec<&String> = listed.iter().filter(|n| !known.contains(n)).collect();
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for name in &listed {
        *counts.entry(name).or_default() += 1;
    }
    let twice: Vec<&&String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(name, _)| name)
        .collect();
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!("missing {missing:?}"));
    }
    if !extra.is_empty() {
        why.push(format!("not in the spec {extra:?}"));
    }
    if !twice.is_empty() {
        why.push(format!("listed twice {twice:?}"));
    }
    if why.is_empty() {
        why.push("in another order".to_owned());
    }
    vec![format!(
        "README.md's {EVENTS_SECTION:?} differs from the spec's EventName ({}); list these {} \
         names, one per line, in this order:\n{}",
        why.join("; "),
        known.len(),
        known.join("\n")
    )]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const REPO: &str = "https://github.com/chip-gate/chip-gate";

    #[test]
    fn each_block_is_a_program_of_its_own() {
        let readme = format!(
            "```toml\n[dependencies]\nchip-gate = {{ git = \"{REPO}\", features = [\"axum\"] }}\n\
             tokio = \"1\"\n```\n\n```rust\nuse chip_gate::Verifier;\nfn main() {{}}\n```\n\n\
             ```rust,no_run\nuse chip_gate::Verifier;\nfn main() {{}}\n```\n"
        );
        let consumer = assemble("README.md", &readme, Path::new("/x"), REPO)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .unwrap_or_else(|| panic!("no consumer"));
        assert_eq!(consumer.name, "readme-root");
        assert!(
            consumer
                .manifest
                .contains("chip-gate = { path = \"/x/crates/chip-gate\", features = [\"axum\"] }"),
            "{}",
            consumer.manifest
        );
        assert_eq!(consumer.blocks.len(), 2);
        assert_eq!(consumer.blocks[0].0, "line_7.rs");
        assert!(
            consumer
                .blocks
                .iter()
                .all(|(_, b)| b.matches("use chip_gate").count() == 1)
        );
    }

    #[test]
    fn hidden_lines_registry_versions_and_missing_dependencies_are_refused() {
        let hidden = format!(
            "```toml\n[dependencies]\nchip-gate = {{ git = \"{REPO}\" }}\n```\n\
             ```rust\n# fn main() {{}}\n```\n"
        );
        let problems = assemble("README.md", &hidden, Path::new("/x"), REPO).unwrap_err();
        assert!(
            problems[0].contains("README.md:6: a `# ` line"),
            "{problems:?}"
        );

        let registry =
            "```toml\n[dependencies]\nchip-gate = \"0.2\"\n```\n```rust\nfn main() {}\n```\n";
        let problems = assemble("README.md", registry, Path::new("/x"), REPO).unwrap_err();
        assert!(problems[0].contains("not on crates.io"), "{problems:?}");

        let none = "```rust\nfn main() {}\n```\n";
        let problems = assemble("x/README.md", none, Path::new("/x"), REPO).unwrap_err();
        assert!(problems[0].contains("no ```toml block"), "{problems:?}");

        assert!(matches!(
            assemble("README.md", "```sh\nls\n```\n", Path::new("/x"), REPO),
            Ok(None)
        ));
    }

    #[test]
    fn intra_doc_links_are_refused_and_real_ones_pass() {
        let folder = crate::workspace_root();
        let text = "It builds on [`chip_gate`]: its [`Verifier`](chip_gate::Verifier) and a \
                    [dedup key](dedup_key).\nSee [the spec](openapi/chip-collect-webhooks.yaml), \
                    [CHIP](https://www.chip-in.asia), [below](#setup) and `[redacted]`.\n\
                    ```rust\nlet x = [`a`];\n```\n";
        let problems = check_links("README.md", text, &folder);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems[0].contains("README.md:1: [`chip_gate`]"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("`chip_gate::Verifier`"),
            "{problems:?}"
        );
        assert!(problems[2].contains("`dedup_key`"), "{problems:?}");
    }

    #[test]
    fn event_names_follow_the_spec() {
        let root = crate::workspace_root();
        let spec = std::fs::read_to_string(root.join(crate::DEFAULT_SPEC)).unwrap_or_default();
        let known = spec_event_names(&spec).unwrap_or_default();
        assert_eq!(known.len(), 29);
        let readme = |names: &[String]| {
            format!(
                "# x\n\n{EVENTS_SECTION}\n\nThe names:\n\n```text\n{}\n```\n\n## Next\n",
                names.join("\n")
            )
        };
        assert!(check_event_names(&readme(&known), &spec).is_empty());
        let mut drifted = known.clone();
        drifted.pop();
        drifted.push("purchase.added_later".to_owned());
        let problems = check_event_names(&readme(&drifted), &spec);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("missing [\"payment.chargeback_reversed\"]"),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("not in the spec [\"purchase.added_later\"]"),
            "{problems:?}"
        );
        let mut swapped = known.clone();
        swapped.swap(0, 1);
        assert!(check_event_names(&readme(&swapped), &spec)[0].contains("in another order"));
    }

    /// The fast half of `cargo xtask readme`, run by `cargo test --workspace`: the READMEs'
    /// event names, links and dependency lines (building the blocks is left to the xtask).
    #[test]
    fn the_readmes_pass_the_static_checks() {
        let root = crate::workspace_root();
        let repository = repository(&root).unwrap_or_default();
        let spec = std::fs::read_to_string(root.join(crate::DEFAULT_SPEC)).unwrap_or_default();
        let mut problems = Vec::new();
        for path in readmes(&root) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let shown = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            problems.extend(check_links(&shown, &text, path.parent().unwrap_or(&root)));
            if path == root.join("README.md") {
                problems.extend(check_event_names(&text, &spec));
            }
            if let Err(found) = assemble(&shown, &text, &root, &repository) {
                problems.extend(found);
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
