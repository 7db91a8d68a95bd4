//! `cargo xtask generate | check`: write or drift-check `crates/chip-gate-api/src/generated.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use xtask::diff::Impact;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Generate and drift-check the chip-gate-api client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the client from the spec and write it.
    Generate(Paths),
    /// Regenerate in memory and fail, with a diff, if the checked-in file differs.
    Check(Paths),
    /// Summarize what changed in the spec since a release (or any revision or file), say which
    /// changes break users of chip-gate-api and chip-gate, and which version bump they need.
    Diff(DiffArgs),
    /// Walk through spec changes: breaking ones must be named by `diff`; additive ones, applied to
    /// a copy of the workspace and regenerated, must build and pass the tests with no other edit.
    Evolve,
    /// Check every README as a newcomer uses it: each Rust block builds as shown, as a program of
    /// its own, with the README's own [dependencies] block (the workspace's crates from git);
    /// links work on GitHub and in rustdoc; the root README lists the spec's event names.
    Readme,
}

#[derive(Args)]
struct DiffArgs {
    /// The git revision to compare with [default: the last commit that changed the workspace
    /// version in Cargo.toml, i.e. the last release].
    #[arg(long, value_name = "REV", conflicts_with = "old")]
    base: Option<String>,
    /// Compare with this spec file instead of a git revision.
    #[arg(long, value_name = "PATH")]
    old: Option<PathBuf>,
    /// The new spec [default: openapi/chip-collect-webhooks.yaml in the working tree].
    #[arg(long, value_name = "PATH")]
    spec: Option<PathBuf>,
    /// Fail (exit 1) when the changes break users and the workspace version has not been bumped as
    /// far as they need since the baseline.
    #[arg(long)]
    check_version: bool,
}

#[derive(Args)]
struct Paths {
    /// The OpenAPI spec to read [default: openapi/chip-collect-webhooks.yaml].
    #[arg(long, value_name = "PATH")]
    spec: Option<PathBuf>,
    /// The generated file [default: crates/chip-gate-api/src/generated.rs].
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

impl Paths {
    fn resolve(self) -> (PathBuf, PathBuf) {
        let root = xtask::workspace_root();
        (
            self.spec.unwrap_or_else(|| root.join(xtask::DEFAULT_SPEC)),
            self.out.unwrap_or_else(|| root.join(xtask::DEFAULT_OUT)),
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (result, verb) = match cli.command {
        Command::Diff(args) => return run_diff(args),
        Command::Readme => return exit_code(xtask::readme::run()),
        Command::Evolve => return exit_code(xtask::evolve::run()),
        Command::Generate(paths) => {
            let (spec, out) = paths.resolve();
            (xtask::write(&spec, &out).map(|g| (g, spec, out)), "wrote")
        }
        Command::Check(paths) => {
            let (spec, out) = paths.resolve();
            (
                xtask::check(&spec, &out).map(|g| (g, spec, out)),
                "up to date:",
            )
        }
    };
    match result {
        Ok((generated, spec, out)) => {
            for note in &generated.normalizations {
                eprintln!("normalized {note}");
            }
            println!(
                "{verb} {} (from {})",
                xtask::display_path(&out),
                xtask::display_path(&spec)
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Success, or the error as one `error: ...` line and exit code 1.
fn exit_code(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask diff`.
fn run_diff(args: DiffArgs) -> ExitCode {
    match diff(args) {
        Ok(code) => code,
        Err(message) => exit_code(Err(message)),
    }
}

fn diff(args: DiffArgs) -> Result<ExitCode, String> {
    let root = xtask::workspace_root();
    let spec = args.spec.unwrap_or_else(|| root.join(xtask::DEFAULT_SPEC));
    let new_text = std::fs::read_to_string(&spec)
        .map_err(|e| format!("cannot read {}: {e}", spec.display()))?;
    let current = std::fs::read_to_string(root.join("Cargo.toml"))
        .ok()
        .and_then(|text| xtask::workspace_version(&text));
    let (old_text, old_name, base_version) = match (&args.old, &args.base) {
        (Some(path), _) => (
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            path.display().to_string(),
            current,
        ),
        (None, base) => {
            let rev = match base {
                Some(rev) => rev.clone(),
                None => xtask::release_baseline()?,
            };
            let short: String = rev.chars().take(12).collect();
            let text = xtask::git(&["show", &format!("{rev}:{}", xtask::DEFAULT_SPEC)])?;
            let version = xtask::git(&["show", &format!("{rev}:Cargo.toml")])
                .ok()
                .and_then(|t| xtask::workspace_version(&t));
            (text, format!("{} at {short}", xtask::DEFAULT_SPEC), version)
        }
    };
    let old = xtask::load_document(&old_text, &old_name).map_err(|e| e.to_string())?;
    let new =
        xtask::load_document(&new_text, &xtask::display_path(&spec)).map_err(|e| e.to_string())?;
    let changes = xtask::diff::diff(&old, &new);
    println!(
        "Spec changes from {old_name}{} to {}{}:\n",
        base_version
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default(),
        xtask::display_path(&spec),
        current
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default(),
    );
    print!("{}", changes.report(base_version));
    // Only a breaking change must wait for its bump; an additive one may ride on the next release.
    if args.check_version
        && let (Some(Impact::Breaking), Some(base), Some(now)) =
            (changes.impact(), base_version, current)
        && !base.allows(now, Impact::Breaking)
    {
        let impact = Impact::Breaking;
        eprintln!(
            "error: these changes need version {} or later, and Cargo.toml says {now}: bump \
             [workspace.package] version (and add a CHANGELOG entry) before they land",
            base.bumped_for(impact)
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
