//! `cargo xtask generate | check`: write or drift-check `crates/chip-gate-api/src/generated.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
