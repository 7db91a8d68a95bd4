//! The chip-gate code generator.
//!
//! One pipeline, used by `cargo xtask generate`, `cargo xtask check` and the drift test:
//!
//! ```text
//! spec file -> parse (YAML or JSON) -> normalize -> validate -> progenitor -> prettyplease -> file
//! ```
//!
//! Every step reports failure as an [`Error`] that names the file, the operation and the construct;
//! progenitor itself runs under `catch_unwind`, so a spec it cannot handle never ends in a panic.

pub mod diff;
pub mod evolve;
mod limits;
pub mod mutations;
mod normalize;
mod open_enum;
pub mod readme;
mod validate;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use progenitor::{GenerationSettings, Generator, HooksMode, InterfaceStyle, TagStyle, TypeImpl};
use sha2::{Digest, Sha256};

pub use normalize::Normalization;
pub use validate::Problem;

/// The spec that `generate` and `check` read unless told otherwise, relative to the workspace root.
pub const DEFAULT_SPEC: &str = "openapi/chip-collect-webhooks.yaml";
/// The file that `generate` writes unless told otherwise, relative to the workspace root.
pub const DEFAULT_OUT: &str = "crates/chip-gate-api/src/generated.rs";
/// The command that brings the generated file back in line with the spec.
pub const FIX_COMMAND: &str = "cargo xtask generate";

/// Everything that can stop generation or a drift check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The spec is not well-formed YAML (or JSON).
    #[error("{path} is not valid YAML: {message}")]
    Syntax {
        /// The spec file.
        path: String,
        /// The parser's message, with the line and column.
        message: String,
    },
    /// The spec parses but is not an OpenAPI 3.0 document this pipeline can read.
    #[error("{path} is not an OpenAPI document progenitor can read: {message}")]
    Shape {
        /// The spec file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The spec uses constructs progenitor would panic on or reject.
    #[error("{path} has {n} problem(s) that progenitor cannot handle:\n{list}", n = problems.len(), list = list_problems(problems))]
    Invalid {
        /// The spec file.
        path: String,
        /// One entry per offending construct.
        problems: Vec<Problem>,
    },
    /// Progenitor refused the spec (or panicked, which is caught and reported here).
    #[error("progenitor could not generate a client from {path}: {message}")]
    Generator {
        /// The spec file.
        path: String,
        /// Progenitor's message.
        message: String,
    },
    /// The checked-in file differs from what the spec generates.
    #[error(
        "{out} is out of date with {spec}:\n{diff}\nTo fix it, run `{fix}` and commit the spec and {out} together."
    )]
    Drift {
        /// The spec file.
        spec: String,
        /// The checked-in generated file.
        out: String,
        /// A unified diff from the checked-in file to the regenerated one.
        diff: String,
        /// The command that fixes the drift.
        fix: String,
    },
}

fn list_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The result of a successful generation.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The complete text of the generated file, header line included.
    pub code: String,
    /// The normalizations applied to the spec before generating, in the order applied.
    pub normalizations: Vec<Normalization>,
}

/// The workspace root (the parent of the `xtask` folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// How a path is named in the header and in messages: relative to the workspace root when it
/// lies inside it (so every clone writes the same header), else as given.
pub fn display_path(path: &Path) -> String {
    let root = workspace_root();
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let (root, full) = (canonical(&root), canonical(path));
    match full.strip_prefix(&root) {
        Ok(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => path.display().to_string(),
    }
}

/// The version of progenitor this xtask was built with, read from the workspace's `Cargo.lock`.
pub fn progenitor_version() -> &'static str {
    const LOCK: &str = include_str!("../../Cargo.lock");
    let mut lines = LOCK.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"progenitor\""
            && let Some(version) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
        {
            return version;
        }
    }
    "unknown"
}

/// Runs the whole pipeline on the spec at `spec_path` and returns the generated file's text.
pub fn generate(spec_path: &Path) -> Result<Generated, Error> {
    let shown = display_path(spec_path);
    let bytes = std::fs::read(spec_path).map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    generate_from_bytes(&bytes, &shown)
}

/// Runs the pipeline on spec text already in memory; `shown` names it in the header and errors.
pub fn generate_from_bytes(bytes: &[u8], shown: &str) -> Result<Generated, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::Syntax {
        path: shown.to_owned(),
        message: format!("not UTF-8 ({e})"),
    })?;
    let document = normalize::parse_document(text).map_err(|message| Error::Syntax {
        path: shown.to_owned(),
        message,
    })?;
    let (mut spec, mut normalizations) =
        normalize::to_openapi(document).map_err(|message| Error::Shape {
            path: shown.to_owned(),
            message,
        })?;
    let problems = validate::validate_and_normalize(&mut spec, &mut normalizations);
    if !problems.is_empty() {
        return Err(Error::Invalid {
            path: shown.to_owned(),
            problems,
        });
    }
    let open_enums = open_enum::collect(&spec).map_err(|problems| Error::Invalid {
        path: shown.to_owned(),
        problems,
    })?;

    let mut settings = GenerationSettings::default();
    settings
        .with_interface(InterfaceStyle::Builder)
        .with_tag(TagStyle::Merged)
        .with_derive("schemars::JsonSchema")
        // The crate's hand-written `hooks` module adjusts requests (see there); `Expected` makes a
        // missing implementation a compile error instead of a silent no-op.
        .with_inner_type(quote::quote!(crate::hooks::Hooks))
        .with_hooks(HooksMode::Expected);
    for open in &open_enums {
        settings.with_replacement(
            &open.name,
            format!("crate::types::{}", open.name),
            [TypeImpl::Display, TypeImpl::FromStr].into_iter(),
        );
    }

    let tokens = run_progenitor(&settings, &spec).map_err(|message| Error::Generator {
        path: shown.to_owned(),
        message,
    })?;
    let mut file: syn::File = syn::parse2(tokens).map_err(|e| Error::Generator {
        path: shown.to_owned(),
        message: format!("generated code does not parse: {e}"),
    })?;
    open_enum::insert_into_types(&mut file, &open_enums).map_err(|message| Error::Generator {
        path: shown.to_owned(),
        message,
    })?;
    mark_non_exhaustive(&mut file);
    hide_response_builders(&mut file, &request_types(&spec));
    let limits: syn::File =
        syn::parse2(limits::tokens(&limits::collect(&spec))).map_err(|e| Error::Generator {
            path: shown.to_owned(),
            message: format!("the limits module does not parse: {e}"),
        })?;
    file.items.extend(limits.items);

    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let header = format!(
        "// @generated by `{FIX_COMMAND}` from {shown} (sha256 {hex}) with progenitor {}. Do not edit: change the spec and regenerate.\n",
        progenitor_version()
    );
    Ok(Generated {
        code: header + &prettyplease::unparse(&file),
        normalizations,
    })
}

/// Marks every struct and enum of the `types` module `#[non_exhaustive]`.
///
/// Code outside the generated crate then cannot build them with struct literals or match them
/// exhaustively, so a property or an enum value the spec adds later is an additive change for every
/// user (and for this workspace's own crates, which the compiler holds to the same rule). They are
/// still built with their generated builders (`WebhookCreate::builder()`), read field by field, and
/// decoded with serde.
fn mark_non_exhaustive(file: &mut syn::File) {
    let Some((_, items)) = file.items.iter_mut().find_map(|item| match item {
        syn::Item::Mod(m) if m.ident == "types" => m.content.as_mut(),
        _ => None,
    }) else {
        return;
    };
    let attribute: syn::Attribute = syn::parse_quote!(#[non_exhaustive]);
    for item in items.iter_mut() {
        let attrs = match item {
            syn::Item::Struct(s) => &mut s.attrs,
            syn::Item::Enum(e) => &mut e.attrs,
            _ => continue,
        };
        if !attrs.iter().any(|a| a.path().is_ident("non_exhaustive")) {
            attrs.push(attribute.clone());
        }
    }
}

/// The component schemas that request bodies use directly: the types callers build.
fn request_types(spec: &openapiv3::OpenAPI) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (_, item) in spec.paths.iter() {
        let Some(item) = item.as_item() else { continue };
        for (_, op) in item.iter() {
            let Some(body) = op.request_body.as_ref().and_then(|b| b.as_item()) else {
                continue;
            };
            for media in body.content.values() {
                if let Some(openapiv3::ReferenceOr::Reference { reference }) = &media.schema
                    && let Some(name) = reference.strip_prefix("#/components/schemas/")
                {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    names
}

/// Hides the generated builders of the types callers never build (what the API answers with):
/// `Webhook::builder()` and its `types::builder::Webhook` would only puzzle a reader of the docs.
/// They stay usable (the crate's own conversions need them); request types keep theirs shown.
fn hide_response_builders(file: &mut syn::File, requests: &std::collections::BTreeSet<String>) {
    let hidden: syn::Attribute = syn::parse_quote!(#[doc(hidden)]);
    let Some((_, items)) = file.items.iter_mut().find_map(|item| match item {
        syn::Item::Mod(m) if m.ident == "types" => m.content.as_mut(),
        _ => None,
    }) else {
        return;
    };
    let last_segment = |ty: &syn::Type| match ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    };
    let mut responses = std::collections::BTreeSet::new();
    for item in items.iter_mut() {
        if let syn::Item::Impl(block) = item
            && block.trait_.is_none()
            && let Some(name) = last_segment(&block.self_ty)
            && !requests.contains(&name)
        {
            for inner in &mut block.items {
                if let syn::ImplItem::Fn(f) = inner
                    && f.sig.ident == "builder"
                {
                    f.attrs.push(hidden.clone());
                    responses.insert(name.clone());
                }
            }
        }
    }
    for item in items.iter_mut() {
        let syn::Item::Mod(module) = item else {
            continue;
        };
        if module.ident != "builder" {
            continue;
        }
        let Some((_, inner)) = module.content.as_mut() else {
            continue;
        };
        for item in inner.iter_mut() {
            match item {
                syn::Item::Struct(s) if responses.contains(&s.ident.to_string()) => {
                    s.attrs.push(hidden.clone());
                }
                syn::Item::Impl(block) => {
                    let named =
                        last_segment(&block.self_ty).is_some_and(|n| responses.contains(&n));
                    if named && block.trait_.is_some() {
                        block.attrs.push(hidden.clone());
                    }
                }
                _ => {}
            }
        }
    }
}

/// Runs progenitor with panics caught: a panic becomes an error message, and the default panic
/// hook is silenced meanwhile so nothing (no backtrace) reaches the terminal.
fn run_progenitor(
    settings: &GenerationSettings,
    spec: &openapiv3::OpenAPI,
) -> Result<proc_macro2::TokenStream, String> {
    let previous_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        Generator::new(settings).generate_tokens(spec)
    }));
    panic::set_hook(previous_hook);
    match outcome {
        Ok(Ok(tokens)) => Ok(tokens),
        Ok(Err(e)) => Err(e.to_string()),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "an internal error".to_owned());
            Err(format!(
                "progenitor panicked ({}); the spec uses a construct it does not support",
                message.lines().next().unwrap_or_default()
            ))
        }
    }
}

/// Writes the generated file for `spec_path` to `out_path`.
pub fn write(spec_path: &Path, out_path: &Path) -> Result<Generated, Error> {
    let generated = generate(spec_path)?;
    std::fs::write(out_path, &generated.code).map_err(|source| Error::Write {
        path: display_path(out_path),
        source,
    })?;
    Ok(generated)
}

/// Regenerates in memory and compares with `out_path`; any difference is an [`Error::Drift`].
pub fn check(spec_path: &Path, out_path: &Path) -> Result<Generated, Error> {
    let generated = generate(spec_path)?;
    let out_shown = display_path(out_path);
    let current = match std::fs::read(out_path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(Error::Read {
                path: out_shown,
                source,
            });
        }
    };
    if current == generated.code {
        return Ok(generated);
    }
    let diff = similar::TextDiff::from_lines(&current, &generated.code)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{out_shown} (checked in)"),
            &format!("{out_shown} (regenerated)"),
        )
        .to_string();
    Err(Error::Drift {
        spec: display_path(spec_path),
        out: out_shown,
        diff,
        fix: FIX_COMMAND.to_owned(),
    })
}

/// Parses spec text into the document the pipeline reads (3.1 written with 3.0 constructs is read
/// as 3.0.3), for comparing two versions of a spec with [`diff::diff`].
pub fn load_document(text: &str, shown: &str) -> Result<serde_json::Value, Error> {
    let document = normalize::parse_document(text).map_err(|message| Error::Syntax {
        path: shown.to_owned(),
        message,
    })?;
    Ok(document)
}

/// The `version` of `[workspace.package]` in a root `Cargo.toml`'s text.
pub fn workspace_version(cargo_toml: &str) -> Option<diff::Version> {
    let mut in_package = false;
    for line in cargo_toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
            continue;
        }
        if in_package
            && let Some(rest) = line.strip_prefix("version")
            && let Some(value) = rest.trim_start().strip_prefix('=')
        {
            return diff::Version::parse(value.trim().trim_matches('"'));
        }
    }
    None
}

/// Runs `git` in the workspace root and returns its standard output.
pub fn git(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The last release point: the commit that the newest released section of `CHANGELOG.md` names
/// (`Released from commit <hash>.`), so that a diff against it covers every change since; without
/// one, the newest commit that changed the workspace `version` line of the root `Cargo.toml`.
pub fn release_baseline() -> Result<String, String> {
    if let Ok(changelog) = std::fs::read_to_string(workspace_root().join("CHANGELOG.md"))
        && let Some(rev) = released_commit(&changelog)
    {
        return Ok(rev);
    }
    let rev = git(&[
        "log",
        "-1",
        "--format=%H",
        "-G",
        "^version = ",
        "--",
        "Cargo.toml",
    ])?;
    let rev = rev.trim();
    if rev.is_empty() {
        Err(
            "no release is named in CHANGELOG.md and no commit changed the workspace version; \
             pass --base REV"
                .into(),
        )
    } else {
        Ok(rev.to_owned())
    }
}

/// The commit named by the first `Released from commit <hash>` line of a changelog.
pub fn released_commit(changelog: &str) -> Option<String> {
    changelog.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("Released from commit ")?;
        let hash: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        (hash.len() >= 7).then_some(hash)
    })
}
