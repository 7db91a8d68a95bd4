//! `chip webhooks plan` and `chip webhooks apply`: webhooks as code (see `chip_gate::plan`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use chip_gate::plan::{
    self as gate_plan, Change, LoadOptions, Plan, PlanOptions, Step, StepOutcome, WebhookFile,
};
use clap::Args;
use serde::Serialize;

use crate::common::{ApiArgs, Failure, Outcome, api_key, client_with_key};
use crate::input::read_text_capped;
use crate::term::{clean, clean_lines};
use crate::{files, outln, output};

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
    /// The webhook file (TOML; see the README's "Webhooks as code"); `-` reads standard input
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when the account matches the file, 2 when it does not (changes to make, or
    /// duplicates left), 1 on any error, as `terraform plan -detailed-exitcode`
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Accept a file that lists no webhook (with --prune --prune-prefix it deletes every webhook
    /// under the prefix)
    #[arg(long)]
    pub allow_empty: bool,
    #[command(flatten)]
    pub prune: PruneArgs,
    #[command(flatten)]
    pub vars: VarArgs,
}

/// `chip webhooks apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The webhook file (TOML; see the README's "Webhooks as code"); `-` reads standard input
    /// (then --yes is required)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Apply without asking (required when standard input is not a terminal)
    #[arg(long)]
    pub yes: bool,
    /// Print one JSON document instead of the text: the plan, each step's outcome (with the ids
    /// created, updated and deleted) and whether the account matches the file
    #[arg(long)]
    pub json: bool,
    /// Accept a file that lists no webhook (with --prune --prune-prefix it deletes every webhook
    /// under the prefix)
    #[arg(long)]
    pub allow_empty: bool,
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

/// Whether `path` means standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Reads the file (`-`: standard input, capped as a file is) with its own variables and `vars`,
/// refusing any value that carries `key`, and refuses a file with no webhook unless `allow_empty`.
fn load(path: &Path, vars: &VarArgs, key: &str, allow_empty: bool) -> Result<WebhookFile, Failure> {
    let options = vars.options(key)?;
    let file = if is_stdin(path) {
        let text = read_text_capped(path, gate_plan::MAX_FILE_BYTES, "the webhook file")?;
        WebhookFile::parse_with_options(&text, &options, |name| std::env::var(name).ok()).map_err(
            |e| match e.line() {
                Some(line) => Failure::usage(format!("standard input:{line}: {}", e.message())),
                None => Failure::usage(format!("standard input: {}", e.message())),
            },
        )?
    } else {
        WebhookFile::load_with(path, &options).map_err(Failure::usage)?
    };
    if file.webhooks().is_empty() && !allow_empty {
        let name = if is_stdin(path) {
            "standard input".to_owned()
        } else {
            path.display().to_string()
        };
        return Err(Failure::usage(format!(
            "{name} lists no webhook (no [[webhook]] table): planned as is, the account would \
             keep none of the file's webhooks, and with --prune --prune-prefix every webhook \
             under the prefix would be deleted; add the webhooks (see the README's \"Webhooks as \
             code\"), or pass --allow-empty if the account should really have none"
        )));
    }
    Ok(file)
}

fn print_plan(plan: &Plan) -> Result<(), Failure> {
    let text = clean_lines(&plan.to_string());
    outln!("{}", text.trim_end())
}

/// Runs `chip webhooks plan`: reads the file (every problem is reported before any call), lists
/// the account, prints the difference.
///
/// With `--detailed-exitcode`: 0 when the account matches, 2 when it does not, 1 on any error
/// (including bad usage and a bad file, which otherwise exit 2).
pub async fn plan(api: &ApiArgs, args: PlanArgs) -> Outcome {
    let detailed = args.detailed_exitcode;
    match plan_inner(api, args).await {
        Ok(plan) if detailed && !plan.is_converged() => Ok(2),
        Ok(_) => Ok(0),
        Err(failure) if detailed && failure.code == 2 => Err(Failure { code: 1, ..failure }),
        Err(failure) => Err(failure),
    }
}

async fn plan_inner(api: &ApiArgs, args: PlanArgs) -> Result<Plan, Failure> {
    let key = api_key(api)?;
    let file = load(&args.file, &args.vars, &key, args.allow_empty)?;
    let options = args.prune.options()?;
    let client = client_with_key(api, key)?;
    let plan = gate_plan::plan(&client, &file, &options).await?;
    if args.json {
        output::json(&plan)?;
    } else {
        print_plan(&plan)?;
    }
    Ok(plan)
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

/// One step of `apply --json`: what was to be done, to which webhook, and how it went.
#[derive(Serialize)]
struct StepJson {
    /// `create`, `update` or `delete`.
    action: &'static str,
    /// The webhook's title.
    title: String,
    /// Its id: the one created, updated or deleted (none for a create that was not made).
    id: Option<uuid::Uuid>,
    /// `done`, `already_gone`, `failed` or `not_run`.
    outcome: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl StepJson {
    fn new(step: &Step) -> Self {
        let id = match (&step.change, &step.outcome) {
            (Change::Update { id, .. } | Change::Delete { id, .. }, _) => Some(*id),
            (Change::Create { .. }, StepOutcome::Done(Some(webhook))) => Some(webhook.id),
            (Change::Create { .. }, _) => None,
        };
        let (outcome, error) = match &step.outcome {
            StepOutcome::Done(_) => ("done", None),
            StepOutcome::AlreadyGone => ("already_gone", None),
            StepOutcome::Failed(e) => ("failed", Some(e.to_string())),
            StepOutcome::NotRun => ("not_run", None),
        };
        StepJson {
            action: step.change.verb(),
            title: step.change.title().to_owned(),
            id,
            outcome,
            error,
        }
    }
}

/// `apply --json`: the plan, the steps, the ids touched, and whether the account matches.
#[derive(Serialize)]
struct ApplyJson<'a> {
    /// The plan that was applied.
    plan: &'a Plan,
    /// Every change, in order, with its outcome.
    steps: Vec<StepJson>,
    /// The ids of the webhooks created.
    created: Vec<uuid::Uuid>,
    /// The ids of the webhooks updated.
    updated: Vec<uuid::Uuid>,
    /// The ids of the webhooks deleted (or found already gone).
    deleted: Vec<uuid::Uuid>,
    /// Whether the account was listed again afterwards and matches the file.
    converged: bool,
    /// The key bundle written with --keys-out.
    #[serde(skip_serializing_if = "Option::is_none")]
    keys_out: Option<KeysOutJson>,
    /// Why apply failed (then it exits non-zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Where the key bundle went.
#[derive(Serialize)]
struct KeysOutJson {
    path: String,
    keys: usize,
}

impl<'a> ApplyJson<'a> {
    fn new(plan: &'a Plan, steps: &[Step]) -> Self {
        let steps: Vec<StepJson> = steps.iter().map(StepJson::new).collect();
        let ids = |action: &str| -> Vec<uuid::Uuid> {
            steps
                .iter()
                .filter(|s| s.action == action && matches!(s.outcome, "done" | "already_gone"))
                .filter_map(|s| s.id)
                .collect()
        };
        ApplyJson {
            plan,
            created: ids("create"),
            updated: ids("update"),
            deleted: ids("delete"),
            steps,
            converged: false,
            keys_out: None,
            error: None,
        }
    }

    /// Prints it; a `failure` is recorded in it and then returned.
    fn print(mut self, failure: Option<Failure>) -> Outcome {
        if let Some(failure) = &failure {
            self.error = Some(failure.message.clone());
        }
        output::json(&self)?;
        match failure {
            Some(failure) => Err(failure),
            None => Ok(0),
        }
    }
}

/// Runs `chip webhooks apply`: plan, confirm, apply step by step, then plan again and succeed only
/// when the account matches the file. With `--json`, stdout is one JSON document (also when a
/// step fails; the error is in it and on stderr).
pub async fn apply(api: &ApiArgs, args: ApplyArgs) -> Outcome {
    let key = api_key(api)?;
    let file = load(&args.file, &args.vars, &key, args.allow_empty)?;
    let options = args.prune.options()?;
    if !args.yes && is_stdin(&args.file) {
        return Err(Failure::usage(
            "-f - reads the webhook file from standard input, so apply cannot ask for \
             confirmation there: review `chip webhooks plan` and pass --yes",
        ));
    }
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "standard input is not a terminal, so apply cannot ask for confirmation: review \
             `chip webhooks plan` and pass --yes",
        ));
    }
    let client = client_with_key(api, key)?;
    let plan = gate_plan::plan(&client, &file, &options).await?;
    if !args.json {
        print_plan(&plan)?;
    }

    let applied = !plan.is_empty();
    let mut steps = Vec::new();
    let after = if !applied {
        plan.clone()
    } else {
        if !args.yes && !confirm(plan.changes().len()).await? {
            return Err(Failure::op("apply cancelled: nothing was changed"));
        }
        let mut write_error = None;
        let json = args.json;
        let report = gate_plan::apply_with_progress(&client, &plan, |step| {
            if !json
                && write_error.is_none()
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
            let failure = Failure::op(format!(
                "apply stopped after {done} of {} change(s): {error}; run apply again: it lists \
                 the account first and picks up where this one stopped",
                report.steps.len()
            ));
            if args.json {
                return ApplyJson::new(&plan, &report.steps).print(Some(failure));
            }
            return Err(failure);
        }
        if let Some(error) = write_error {
            return Err(error);
        }
        steps = report.steps;
        match gate_plan::plan(&client, &file, &options).await {
            Ok(after) => after,
            Err(e) => {
                let failure = Failure::op(format!("applied, but cannot list to check: {e}"));
                if args.json {
                    return ApplyJson::new(&plan, &steps).print(Some(failure));
                }
                return Err(failure);
            }
        }
    };
    let mut json = ApplyJson::new(&plan, &steps);

    if !after.is_converged() {
        if !after.is_empty() && !args.json {
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
        let failure = Failure::op(format!("the account does not match the file: {reason}"));
        if args.json {
            return json.print(Some(failure));
        }
        return Err(failure);
    }
    json.converged = true;
    if applied && !args.json {
        outln!("The account matches the file.")?;
    }

    if let Some(path) = &args.keys_out {
        let written = after
            .key_bundle()
            .map_err(|(id, e)| {
                Failure::op(format!(
                    "webhook {id} has a public key that cannot be used: {e}"
                ))
            })
            // A random, exclusively created temporary name, renamed into place; owner-only (0600).
            .and_then(|bundle| {
                files::replace_private(path, bundle.as_bytes()).map_err(Failure::op)
            });
        if let Err(failure) = written {
            if args.json {
                return json.print(Some(failure));
            }
            return Err(failure);
        }
        if args.json {
            json.keys_out = Some(KeysOutJson {
                path: path.display().to_string(),
                keys: after.managed().len(),
            });
        } else {
            outln!(
                "Wrote {} public key(s) to {}.",
                after.managed().len(),
                path.display()
            )?;
        }
    }
    if args.json {
        return json.print(None);
    }
    Ok(0)
}
