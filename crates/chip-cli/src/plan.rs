//! `chip webhooks plan` and `chip webhooks apply`: webhooks as code (see `chip_gate::plan`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use chip_gate::plan::{
    self as gate_plan, LoadOptions, Plan, PlanOptions, Step, StepOutcome, WebhookFile,
};
use clap::Args;

use crate::term::{clean, clean_lines};
use crate::{ApiArgs, Failure, Outcome, api_key, client_with_key, files, outln, output};

/// Which webhooks a plan may delete.
#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Delete webhooks the file manages that should not be there: extra copies of a title of the
    /// file and, with --prune-prefix, webhooks whose title starts with that prefix and which the
    /// file does not list. Nothing else is ever deleted
    #[arg(long)]
    pub prune: bool,
    /// With --prune: webhooks whose title starts with PREFIX belong to the file (repeat for
    /// several)
    #[arg(long = "prune-prefix", value_name = "PREFIX", requires = "prune")]
    pub prune_prefix: Vec<String>,
}

impl PruneArgs {
    fn options(&self) -> Result<PlanOptions, Failure> {
        let mut options = PlanOptions::new().prune(self.prune);
        for prefix in &self.prune_prefix {
            options = options
                .prune_prefix(prefix.clone())
                .map_err(|e| Failure::usage(format!("--prune-prefix: {e}")))?;
        }
        Ok(options)
    }
}

/// The variables a webhook file may read besides those it declares (`vars = [...]`).
#[derive(Args, Clone)]
pub struct VarArgs {
    /// Let the file read the environment variable NAME although it does not declare it in `vars`;
    /// NAME=VALUE sets it instead (the value wins over the environment). Repeat for several
    #[arg(long = "var", value_name = "NAME[=VALUE]")]
    pub var: Vec<String>,
}

impl std::fmt::Debug for VarArgs {
    /// Names only: a value is the user's business.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .var
            .iter()
            .map(|v| v.split_once('=').map_or(v.as_str(), |(name, _)| name))
            .collect();
        f.debug_struct("VarArgs").field("var", &names).finish()
    }
}

impl VarArgs {
    /// The file's load options: these variables, and `key` (the API key in use) to refuse.
    fn options(&self, key: &str) -> Result<LoadOptions, Failure> {
        let mut options = LoadOptions::new().api_key(key);
        for var in &self.var {
            options = match var.split_once('=') {
                Some((name, value)) => options.var(name, value),
                None => options.allow(var.as_str()),
            }
            .map_err(|e| Failure::usage(format!("--var: {e}")))?;
        }
        Ok(options)
    }
}

/// `chip webhooks plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The webhook file (TOML; see the README's "Webhooks as code")
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub prune: PruneArgs,
    #[command(flatten)]
    pub vars: VarArgs,
}

/// `chip webhooks apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The webhook file (TOML; see the README's "Webhooks as code")
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Apply without asking (required when standard input is not a terminal)
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub prune: PruneArgs,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Afterwards, write the public keys of the file's webhooks to FILE as one PEM bundle (for a
    /// receiver: `Verifier::from_pem_bundle`), owner-only (0600), through a randomly named
    /// temporary file renamed into place
    #[arg(long, value_name = "FILE")]
    pub keys_out: Option<PathBuf>,
}

/// Reads the file with its own variables and `vars`, refusing any value that carries `key`.
fn load(path: &Path, vars: &VarArgs, key: &str) -> Result<WebhookFile, Failure> {
    WebhookFile::load_with(path, &vars.options(key)?).map_err(Failure::usage)
}

fn print_plan(plan: &Plan) -> Result<(), Failure> {
    let text = clean_lines(&plan.to_string());
    outln!("{}", text.trim_end())
}

/// Runs `chip webhooks plan`: reads the file (every problem is reported before any call), lists
/// the account, prints the difference.
pub async fn plan(api: &ApiArgs, args: PlanArgs) -> Outcome {
    let key = api_key(api)?;
    let file = load(&args.file, &args.vars, &key)?;
    let options = args.prune.options()?;
    let client = client_with_key(api, key)?;
    let plan = gate_plan::plan(&client, &file, &options).await?;
    if args.json {
        output::json(&plan)?;
    } else {
        print_plan(&plan)?;
    }
    Ok(0)
}

/// Asks on the terminal; only `yes` goes on.
async fn confirm(changes: usize) -> Result<bool, Failure> {
    crate::term::warn_prompt(format_args!(
        "Make these {changes} change(s) to the account? Only 'yes' is accepted: "
    ));
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| Failure::op(format!("cannot read the answer: {e}")))?
    .map_err(|e| Failure::op(format!("cannot read the answer: {e}")))?;
    Ok(answer.trim() == "yes")
}

fn step_line(step: &Step) -> String {
    let mark = match step.outcome {
        StepOutcome::Done(_) | StepOutcome::AlreadyGone => "ok",
        StepOutcome::Failed(_) => "FAILED",
        StepOutcome::NotRun => "skipped",
    };
    clean(&format!("{mark}: {step}"))
}

/// Runs `chip webhooks apply`: plan, confirm, apply step by step, then plan again and succeed only
/// when the account matches the file.
pub async fn apply(api: &ApiArgs, args: ApplyArgs) -> Outcome {
    let key = api_key(api)?;
    let file = load(&args.file, &args.vars, &key)?;
    let options = args.prune.options()?;
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "standard input is not a terminal, so apply cannot ask for confirmation: review \
             `chip webhooks plan` and pass --yes",
        ));
    }
    let client = client_with_key(api, key)?;
    let plan = gate_plan::plan(&client, &file, &options).await?;
    print_plan(&plan)?;

    let applied = !plan.is_empty();
    let after = if !applied {
        plan
    } else {
        if !args.yes && !confirm(plan.changes().len()).await? {
            return Err(Failure::op("apply cancelled: nothing was changed"));
        }
        let mut write_error = None;
        let report = gate_plan::apply_with_progress(&client, &plan, |step| {
            if write_error.is_none()
                && let Err(e) = outln!("{}", step_line(step))
            {
                write_error = Some(e);
            }
        })
        .await;
        if let Some(error) = report.failure() {
            let done = report
                .steps
                .iter()
                .filter(|s| matches!(s.outcome, StepOutcome::Done(_) | StepOutcome::AlreadyGone))
                .count();
            return Err(Failure::op(format!(
                "apply stopped after {done} of {} change(s): {error}; run apply again: it lists \
                 the account first and picks up where this one stopped",
                report.steps.len()
            )));
        }
        if let Some(error) = write_error {
            return Err(error);
        }
        gate_plan::plan(&client, &file, &options)
            .await
            .map_err(|e| Failure::op(format!("applied, but cannot list to check: {e}")))?
    };

    if !after.is_converged() {
        if !after.is_empty() {
            outln!("Still to do:")?;
            print_plan(&after)?;
        }
        let reason = if after.is_empty() {
            let titles: Vec<String> = after
                .duplicates()
                .iter()
                .map(|d| format!("{:?}", clean(&d.title)))
                .collect();
            format!(
                "several webhooks share the title(s) {}; run with --prune to keep one of each",
                titles.join(", ")
            )
        } else {
            "after applying, the account still differs (see \"Still to do\"): it changed \
             meanwhile, or CHIP stored a value differently from how the file writes it"
                .to_owned()
        };
        return Err(Failure::op(format!(
            "the account does not match the file: {reason}"
        )));
    }
    if applied {
        outln!("The account matches the file.")?;
    }

    if let Some(path) = &args.keys_out {
        let bundle = after.key_bundle().map_err(|(id, e)| {
            Failure::op(format!(
                "webhook {id} has a public key that cannot be used: {e}"
            ))
        })?;
        // A random, exclusively created temporary name, renamed into place; owner-only (0600).
        files::replace_private(path, bundle.as_bytes()).map_err(Failure::op)?;
        outln!(
            "Wrote {} public key(s) to {}.",
            after.managed().len(),
            path.display()
        )?;
    }
    Ok(0)
}
