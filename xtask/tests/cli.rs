//! The xtask as a user runs it: exit codes, diffs and error messages.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

fn root() -> PathBuf {
    xtask::workspace_root()
}

fn spec() -> PathBuf {
    root().join(xtask::DEFAULT_SPEC)
}

fn generated() -> PathBuf {
    root().join(xtask::DEFAULT_OUT)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn xtask(args: &[&str]) -> Run {
    let out = Command::cargo_bin("xtask")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A failure is one short, clear message: exit code 1, no panic, no backtrace.
fn assert_clean_failure(run: &Run, expected: &[&str]) {
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert!(run.stderr.starts_with("error: "), "stderr: {}", run.stderr);
    for needle in expected {
        assert!(
            run.stderr.contains(needle),
            "missing {needle:?} in: {}",
            run.stderr
        );
    }
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!run.stderr.contains(bad), "{bad} in: {}", run.stderr);
    }
    assert!(run.stderr.lines().count() < 12, "too long: {}", run.stderr);
}

#[test]
fn check_passes_on_the_checked_in_file() {
    let run = xtask(&["check"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("up to date"));
}

#[test]
fn check_fails_with_a_diff_when_the_spec_gains_a_property() {
    let dir = TempDir::new().unwrap();
    let text = std::fs::read_to_string(spec()).unwrap();
    let anchor = "        public_key:\n          type: string\n          description: |\n            The PEM (SPKI)";
    assert!(text.contains(anchor));
    let changed = text.replacen(
        anchor,
        &format!("        delivery_count:\n          type: integer\n          description: How many deliveries were sent.\n{anchor}"),
        1,
    );
    let changed_spec = write(&dir, "spec.yaml", &changed);
    let run = xtask(&[
        "check",
        "--spec",
        s(&changed_spec),
        "--out",
        s(&generated()),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("is out of date with"), "{}", run.stderr);
    assert!(
        run.stderr.contains("+        pub delivery_count"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("run `cargo xtask generate`"));
}

#[test]
fn check_fails_with_a_diff_after_a_hand_edit() {
    let dir = TempDir::new().unwrap();
    let text = std::fs::read_to_string(generated()).unwrap();
    let edited = text.replacen("pub callback:", "pub callback_url:", 1);
    assert_ne!(text, edited);
    let out = write(&dir, "generated.rs", &edited);
    let run = xtask(&["check", "--out", s(&out)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("-        pub callback_url:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("+        pub callback:"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_reports_a_missing_generated_file() {
    let dir = TempDir::new().unwrap();
    let run = xtask(&["check", "--out", s(&dir.path().join("absent.rs"))]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("is out of date"));
}

#[test]
fn generate_is_byte_identical_on_every_run_and_matches_the_checked_in_file() {
    let dir = TempDir::new().unwrap();
    let first = dir.path().join("first.rs");
    let second = dir.path().join("second.rs");
    assert_eq!(xtask(&["generate", "--out", s(&first)]).code, 0);
    assert_eq!(xtask(&["generate", "--out", s(&second)]).code, 0);
    let first = std::fs::read(first).unwrap();
    assert_eq!(first, std::fs::read(second).unwrap());
    assert_eq!(first, std::fs::read(generated()).unwrap());
}

#[test]
fn the_header_names_the_spec_its_hash_and_the_progenitor_version() {
    let text = std::fs::read_to_string(generated()).unwrap();
    let header = text.lines().next().unwrap();
    assert!(header.starts_with("// @generated"));
    assert!(header.contains("openapi/chip-collect-webhooks.yaml"));
    assert!(header.contains(&format!("progenitor {}", xtask::progenitor_version())));
    assert_ne!(xtask::progenitor_version(), "unknown");
    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(spec()).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert!(header.contains(&hex));
}

const MINIMAL: &str = r#"openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /things/:
    get:
      operationId: things_list
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {type: string}
"#;

#[test]
fn a_minimal_spec_generates() {
    let dir = TempDir::new().unwrap();
    let spec = write(&dir, "ok.yaml", MINIMAL);
    let out = dir.path().join("out.rs");
    let run = xtask(&["generate", "--spec", s(&spec), "--out", s(&out)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        std::fs::read_to_string(out)
            .unwrap()
            .contains("pub fn things_list")
    );
}

fn failing(name: &str, text: &str, expected: &[&str]) {
    let dir = TempDir::new().unwrap();
    let spec = write(&dir, name, text);
    let out = dir.path().join("out.rs");
    let run = xtask(&["generate", "--spec", s(&spec), "--out", s(&out)]);
    assert_clean_failure(&run, expected);
    assert!(!out.exists(), "nothing is written on failure");
    let run = xtask(&["check", "--spec", s(&spec), "--out", s(&generated())]);
    assert_clean_failure(&run, expected);
}

#[test]
fn broken_yaml_is_a_short_error() {
    failing(
        "broken.yaml",
        "openapi: 3.0.3\ninfo: {title: t\npaths: [\n",
        &["broken.yaml", "is not valid YAML", "line"],
    );
}

#[test]
fn a_missing_operation_id_is_named() {
    failing(
        "no-id.yaml",
        &MINIMAL.replace("      operationId: things_list\n", ""),
        &["operation GET /things/", "has no operationId"],
    );
}

#[test]
fn a_duplicate_operation_id_is_named() {
    let text = format!(
        "{MINIMAL}    post:\n      operationId: things_list\n      responses:\n        \"204\": {{description: done}}\n"
    );
    failing(
        "dup.yaml",
        &text,
        &[
            "operation `things_list` (POST /things/)",
            "duplicate operationId",
            "GET /things/",
        ],
    );
}

#[test]
fn a_default_response_beside_a_typed_success_is_named() {
    let text = format!(
        "{MINIMAL}        default:\n          description: any error\n          content:\n            application/json:\n              schema: {{type: object}}\n"
    );
    failing(
        "default.yaml",
        &text,
        &[
            "operation `things_list` (GET /things/)",
            "`default` response beside the typed success 200",
        ],
    );
}

#[test]
fn several_media_types_are_named() {
    let text = MINIMAL.replace(
        "              schema: {type: string}\n",
        "              schema: {type: string}\n            text/plain:\n              schema: {type: string}\n",
    );
    failing(
        "media.yaml",
        &text,
        &[
            "operation `things_list`",
            "several media types (application/json, text/plain)",
        ],
    );
}

/// Error responses never reach progenitor, so error bodies of different shapes (which would make it
/// panic) generate, and the generated operation returns every error status raw.
#[test]
fn differing_error_bodies_generate_and_are_left_to_the_wrapper() {
    let text = format!(
        "{MINIMAL}        \"400\":\n          description: bad\n          content:\n            application/json:\n              schema: {{type: object}}\n        \"404\":\n          description: missing\n          content:\n            application/json:\n              schema: {{type: string}}\n"
    );
    let dir = TempDir::new().unwrap();
    let spec = write(&dir, "errors.yaml", &text);
    let out = dir.path().join("out.rs");
    let run = xtask(&["generate", "--spec", s(&spec), "--out", s(&out)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error responses 400, 404 handed to the wrapper as raw bytes"),
        "{}",
        run.stderr
    );
    let code = std::fs::read_to_string(out).unwrap();
    assert!(
        code.contains("Error<()>"),
        "the error type is the raw response"
    );
}

#[test]
fn a_spec_that_is_not_openapi_is_a_short_error() {
    failing(
        "swagger.yaml",
        "swagger: \"2.0\"\ninfo: {title: t, version: \"1\"}\n",
        &["no `openapi` version field"],
    );
    failing(
        "bad-shape.yaml",
        "openapi: 3.0.3\ninfo: {title: t, version: \"1\"}\npaths: 7\n",
        &["is not an OpenAPI document progenitor can read"],
    );
}

/// CHIP publishes `openapi: 3.1.0` written with 3.0 constructs, and a 400 with a body beside a
/// 404 without one: both are normalized (error responses are left to the wrapper), each
/// normalization is reported, and generation works.
#[test]
fn a_spec_as_chip_publishes_it_is_normalized_and_reported() {
    let text = r##"openapi: 3.1.0
info: {title: CHIP, version: "1"}
paths:
  /webhooks/{id}/:
    get:
      operationId: webhooks_read
      parameters:
        - {name: id, in: path, required: true, schema: {type: string, format: uuid}}
      responses:
        200:
          description: ok
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Webhook"}
        400:
          description: bad
          content:
            application/json:
              schema: {type: object, additionalProperties: true}
        404:
          description: not found
components:
  schemas:
    Webhook:
      type: object
      properties:
        title: {type: string}
        note: {type: string, nullable: true}
        other: {type: [string, "null"]}
"##;
    let dir = TempDir::new().unwrap();
    let spec = write(&dir, "chip.yaml", text);
    let out = dir.path().join("out.rs");
    let run = xtask(&["generate", "--spec", s(&spec), "--out", s(&out)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("normalized /openapi: declared 3.1.0"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("with nullable: true"), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "normalized operation `webhooks_read` (GET /webhooks/{id}/): error responses 400, 404 \
             handed to the wrapper as raw bytes"
        ),
        "{}",
        run.stderr
    );
    let code = std::fs::read_to_string(out).unwrap();
    assert!(code.contains("pub fn webhooks_read"));
    assert!(code.contains("pub other: ::std::option::Option<::std::string::String>"));
}

#[test]
fn a_spec_that_really_needs_3_1_is_refused() {
    let text = MINIMAL
        .replace("openapi: 3.0.3", "openapi: 3.1.0")
        .replace("schema: {type: string}", "schema: {const: fixed}");
    failing(
        "needs-31.yaml",
        &text,
        &["uses constructs that only 3.1 has", "/schema/const"],
    );
}

/// The spec with one mutation of the walk applied, written to a temp file.
fn mutated_spec(dir: &TempDir, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(spec()).unwrap();
    let mut document = xtask::load_document(&text, "spec").unwrap();
    let mutation = xtask::mutations::all()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap();
    (mutation.apply)(&mut document).unwrap();
    write(
        dir,
        "mutated.yaml",
        &serde_json::to_string_pretty(&document).unwrap(),
    )
}

#[test]
fn diff_names_a_breaking_change_and_the_bump_it_needs() {
    let dir = TempDir::new().unwrap();
    // old = the checked-in spec, new = the same with the change applied.
    let new = mutated_spec(&dir, "Webhook.title becomes optional");
    let run = xtask(&[
        "diff",
        "--old",
        s(&spec()),
        "--spec",
        s(&new),
        "--check-version",
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("! schema Webhook.title")
            && run
                .stdout
                .contains("the field becomes an Option  [BREAKING]"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Verdict: BREAKING"), "{}", run.stdout);
    assert!(run.stdout.contains("Semver: 0."), "{}", run.stdout);
    assert!(
        run.stderr.contains("bump [workspace.package] version"),
        "{}",
        run.stderr
    );
}

#[test]
fn diff_lets_an_additive_change_through() {
    let dir = TempDir::new().unwrap();
    let new = mutated_spec(&dir, "EventName gains a value");
    let run = xtask(&[
        "diff",
        "--old",
        s(&spec()),
        "--spec",
        s(&new),
        "--check-version",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("+ schema EventName")
            && run
                .stdout
                .contains("enum value `purchase.added_by_the_evolve_walk` added"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Verdict: additive"), "{}", run.stdout);
}

#[test]
fn the_release_baseline_is_the_commit_the_changelog_names() {
    assert_eq!(
        xtask::released_commit(
            "# Changelog\n\n## [0.1.0] - 2026-11-27\n\nReleased from commit 887984c.\n"
        ),
        Some("887984c".to_owned())
    );
    assert_eq!(xtask::released_commit("## [0.2.0] - unreleased\n"), None);
}
