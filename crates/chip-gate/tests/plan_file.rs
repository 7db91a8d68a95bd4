//! The webhook file: the schema, `${VAR}` interpolation, and one clear error naming the line for
//! every kind of bad file (no call is made: parsing needs no client).
#![allow(clippy::unwrap_used)]

use chip_gate::EventName;
use chip_gate::plan::{FileError, LoadOptions, WebhookFile};
use proptest::prelude::*;

const FIXTURE: &str = include_str!("fixtures/plan/chip-webhooks.toml");

fn env(name: &str) -> Option<String> {
    match name {
        "SHOP_ENV" => Some("staging".into()),
        "SHOP_HOST" => Some("staging.shop.example.com".into()),
        _ => None,
    }
}

/// What `chip webhooks plan --var SHOP_ENV --var SHOP_HOST` allows: the shop's two variables
/// from the environment, for the short files below that do not declare them (the fixture does).
fn options() -> LoadOptions {
    LoadOptions::new()
        .allow("SHOP_ENV")
        .unwrap()
        .allow("SHOP_HOST")
        .unwrap()
}

/// Parses `text` with [`options`] and `lookup` as the environment.
fn parse(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<WebhookFile, FileError> {
    WebhookFile::parse_with_options(text, &options(), lookup)
}

fn error(text: &str) -> FileError {
    parse(text, env).unwrap_err()
}

/// Asserts the error is on `line` and its message contains every fragment; returns the message.
fn assert_error(text: &str, line: usize, fragments: &[&str]) -> String {
    let error = error(text);
    let message = error.to_string();
    assert_eq!(error.line(), Some(line), "{message}");
    assert!(message.starts_with(&format!("line {line}: ")), "{message}");
    assert!(!message.contains('\n'), "one line: {message:?}");
    for fragment in fragments {
        assert!(
            message.contains(fragment),
            "{fragment:?} not in {message:?}"
        );
    }
    message
}

#[test]
fn the_two_environment_example_parses_with_its_variables() {
    let file = WebhookFile::parse_with(FIXTURE, env).unwrap();
    let hooks = file.webhooks();
    assert_eq!(hooks.len(), 3);
    assert_eq!(hooks[0].title(), "shop/staging/orders");
    assert_eq!(
        hooks[0].callback(),
        "https://staging.shop.example.com/chip/orders"
    );
    assert_eq!(hooks[0].line(), Some(10));
    assert_eq!(
        hooks[0].event_names(),
        &[
            EventName::PurchasePaid,
            EventName::PurchasePaymentFailure,
            EventName::PurchaseCancelled,
            EventName::PaymentRefunded
        ][..]
    );
    assert!(!hooks[0].is_all_events());
    assert!(hooks[2].is_all_events());
    assert!(hooks[2].event_names().is_empty());
    assert!(hooks[2].to_new_webhook().is_all_events());

    // The same file serves production with other values.
    let live = WebhookFile::parse_with(FIXTURE, |name| match name {
        "SHOP_ENV" => Some("production".into()),
        "SHOP_HOST" => Some("shop.example.com".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(live.webhooks()[1].title(), "shop/production/subscriptions");
    assert_eq!(
        live.webhooks()[1].callback(),
        "https://shop.example.com/chip/subscriptions"
    );
}

#[test]
fn an_empty_file_is_no_webhooks() {
    assert!(parse("", env).unwrap().webhooks().is_empty());
    assert!(parse("# nothing yet\n", env).unwrap().webhooks().is_empty());
}

#[test]
fn interpolation_escapes_and_unset_variables() {
    let text = "[[webhook]]\ntitle = \"price $$5 $${literal}\"\ncallback = \"https://${SHOP_HOST}/a?x=$y\"\nall_events = true\n";
    let file = parse(text, env).unwrap();
    assert_eq!(file.webhooks()[0].title(), "price $$5 ${literal}");
    assert_eq!(
        file.webhooks()[0].callback(),
        "https://staging.shop.example.com/a?x=$y"
    );

    let unset = "vars = [\"SHOP_HOSTNAME\"]\n[[webhook]]\ntitle = \"orders\"\n\ncallback = \"https://${SHOP_HOSTNAME}/chip\"\nall_events = true\n";
    assert_error(unset, 5, &["environment variable SHOP_HOSTNAME is not set"]);

    let empty = "vars = [\"BLANK\"]\n[[webhook]]\ntitle = \"orders ${SHOP_ENV}${BLANK}\"\ncallback = \"https://a.example\"\nall_events = true\n";
    let message = parse(empty, |name| {
        if name == "BLANK" {
            Some(String::new())
        } else {
            env(name)
        }
    })
    .unwrap_err()
    .to_string();
    assert_eq!(message, "line 3: environment variable BLANK is empty");

    // The API key is never interpolated, even when it is set; its value is never shown.
    let key = "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example/?k=${CHIP_API_KEY}\"\nall_events = true\n";
    let error = parse(key, |_| Some("sk_live_SECRET".into())).unwrap_err();
    assert_eq!(error.line(), Some(3));
    assert!(!error.to_string().contains("SECRET"));
    assert!(error.to_string().contains("secret API key"));

    // Variables in event names too (and unknown names are still caught after interpolation).
    let events = "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\"\nevents = [\n  \"purchase.paid\",\n  \"${SHOP_ENV}.paid\",\n]\n";
    assert_error(events, 6, &["unknown event name \"staging.paid\""]);

    assert_error(
        "[[webhook]]\ntitle = \"${SHOP_ENV\"\n",
        2,
        &["without a closing `}`"],
    );
    assert_error(
        "[[webhook]]\ntitle = \"${SHOP-ENV}\"\n",
        2,
        &["not a variable name"],
    );
}

#[test]
fn unknown_event_names_are_refused_unless_allowed() {
    let text = "[[webhook]]\ntitle = \"orders\"\ncallback = \"https://a.example\"\nevents = [\"purchase.paid\",\n  \"purchase.payed\"]\n";
    assert_error(
        text,
        5,
        &[
            "unknown event name \"purchase.payed\"",
            "did you mean \"purchase.paid\"",
            "allow_unknown_events = true",
        ],
    );
    let allowed = format!("allow_unknown_events = true\n{text}");
    let file = parse(&allowed, env).unwrap();
    assert_eq!(
        file.webhooks()[0].event_names()[1],
        EventName::from("purchase.payed")
    );
    assert!(!file.webhooks()[0].event_names()[1].is_known());
    // Far from every name: no suggestion.
    let far = "[[webhook]]\ntitle = \"orders\"\ncallback = \"https://a.example\"\nevents = [\"refund\"]\n";
    let message = assert_error(far, 4, &["unknown event name \"refund\""]);
    assert!(!message.contains("did you mean"), "{message}");
}

#[test]
fn duplicate_titles_name_both_lines() {
    let text = "[[webhook]]\ntitle = \"orders\"\ncallback = \"https://a.example\"\nall_events = true\n\n[[webhook]]\ntitle = \"orders\"\ncallback = \"https://b.example\"\nall_events = true\n";
    assert_error(
        text,
        6,
        &["title \"orders\" is already used at line 1", "unique"],
    );
    // Titles that become equal only after interpolation are duplicates too.
    let text = "[[webhook]]\ntitle = \"staging\"\ncallback = \"https://a.example\"\nall_events = true\n[[webhook]]\ntitle = \"${SHOP_ENV}\"\ncallback = \"https://b.example\"\nall_events = true\n";
    assert_error(text, 5, &["already used at line 1"]);
}

#[test]
fn callbacks_and_titles_are_checked_against_chips_limits() {
    let long = format!("https://a.example/{}", "x".repeat(483));
    let text =
        format!("[[webhook]]\ntitle = \"orders\"\ncallback = \"{long}\"\nall_events = true\n");
    assert_error(
        &text,
        3,
        &["callback is 501 characters long", "at most 500"],
    );
    let just = format!("https://a.example/{}", "x".repeat(482));
    let text =
        format!("[[webhook]]\ntitle = \"orders\"\ncallback = \"{just}\"\nall_events = true\n");
    assert!(parse(&text, env).is_ok());

    // An interpolated value that makes the callback too long is caught too.
    let text = "vars = [\"BIG\"]\n[[webhook]]\ntitle = \"t\"\ncallback = \"https://${BIG}/\"\nall_events = true\n";
    let error = parse(text, |_| Some("h".repeat(500))).unwrap_err();
    assert_eq!(error.line(), Some(4));

    for bad in [
        "ftp://a.example/",
        "/relative",
        "https://",
        "not a url",
        "https:// spaced.example",
    ] {
        let text = format!("[[webhook]]\ntitle = \"t\"\ncallback = \"{bad}\"\nall_events = true\n");
        assert_error(&text, 3, &["http:// or https:// URL"]);
    }

    assert_error(
        "[[webhook]]\ntitle = \"  \"\ncallback = \"https://a.example\"\nall_events = true\n",
        2,
        &["title is blank"],
    );
    assert_error(
        "[[webhook]]\ntitle = \"\"\ncallback = \"https://a.example\"\nall_events = true\n",
        2,
        &["title is blank"],
    );
    assert_error(
        "[[webhook]]\ntitle = \"orders \"\ncallback = \"https://a.example\"\nall_events = true\n",
        2,
        &["starts or ends with whitespace"],
    );
    let text = format!(
        "[[webhook]]\ntitle = \"{}\"\ncallback = \"https://a.example\"\nall_events = true\n",
        "é".repeat(101)
    );
    assert_error(&text, 2, &["101 characters", "at most 100"]);
}

#[test]
fn missing_conflicting_and_unknown_keys() {
    assert_error(
        "\n[[webhook]]\ncallback = \"https://a.example\"\nall_events = true\n",
        2,
        &["no title"],
    );
    assert_error(
        "[[webhook]]\ntitle = \"t\"\nall_events = true\n",
        1,
        &["\"t\" has no callback"],
    );
    assert_error(
        "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\"\n",
        1,
        &["has no events", "all_events = true"],
    );
    assert_error(
        "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\"\nall_events = false\n",
        1,
        &["has no events"],
    );
    assert_error(
        "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\"\nall_events = true\nevents = [\"purchase.paid\"]\n",
        5,
        &["both events and all_events"],
    );
    assert_error(
        "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\"\nevents = []\n",
        4,
        &["events is empty"],
    );
    assert_error(
        "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\"\nevents = [\"purchase.paid\", \"purchase.paid\"]\n",
        4,
        &["\"purchase.paid\" is listed twice"],
    );
    // A typo in a key is an error, not a silently ignored setting.
    assert_error(
        "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\"\nevent = [\"purchase.paid\"]\n",
        4,
        &["event"],
    );
    assert_error("alow_unknown_events = true\n", 1, &["alow_unknown_events"]);
    // Wrong types.
    assert_error(
        "[[webhook]]\ntitle = 5\ncallback = \"https://a.example\"\nall_events = true\n",
        2,
        &[],
    );
    assert_error(
        "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\"\nall_events = \"yes\"\n",
        4,
        &[],
    );
    assert_error("[webhook]\ntitle = \"t\"\n", 1, &[]);
}

#[test]
fn toml_syntax_errors_name_the_line() {
    assert_error(
        "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\nall_events = true\n",
        3,
        &[],
    );
    assert_error("[[webhook]]\ntitle = \"t\"\ntitle = \"u\"\n", 3, &[]);
    assert_error("\n\n[[webhook]\n", 3, &[]);
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hooks.toml");
    std::fs::write(&path, "[[webhook]]\ntitle = \"t\"\n").unwrap();
    let message = WebhookFile::load(&path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!("{}:1: webhook \"t\" has no callback", path.display())
    );
    let missing = dir.path().join("missing.toml");
    let message = WebhookFile::load(&missing).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: cannot read it", missing.display())),
        "{message}"
    );
    std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
    assert!(
        WebhookFile::load(&path)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8")
    );
    std::fs::write(&path, vec![b'#'; 1024 * 1024 + 1]).unwrap();
    assert!(
        WebhookFile::load(&path)
            .unwrap_err()
            .to_string()
            .contains("larger than 1 MiB")
    );
}

#[test]
fn files_made_in_code_refuse_duplicate_titles() {
    let hook = |title: &str| {
        chip_gate::NewWebhook::builder(title, "https://a.example")
            .all_events()
            .unwrap()
    };
    assert!(WebhookFile::from_webhooks([hook("a"), hook("b")]).is_ok());
    let error = WebhookFile::from_webhooks([hook("a"), hook("a")]).unwrap_err();
    assert!(error.to_string().contains("\"a\" is used twice"));
}

#[test]
fn a_file_reads_only_the_variables_it_declares() {
    // The environment is never asked for a name the file does not declare.
    let strict = |name: &str| -> Option<String> {
        assert_ne!(
            name, "AWS_SECRET_ACCESS_KEY",
            "an undeclared variable was read"
        );
        env(name)
    };
    let text = "vars = [\"SHOP_HOST\"]\n\n[[webhook]]\ntitle = \"t\"\ncallback = \"https://${SHOP_HOST}/?s=${AWS_SECRET_ACCESS_KEY}\"\nall_events = true\n";
    let error = WebhookFile::parse_with(text, strict).unwrap_err();
    assert_eq!(error.line(), Some(5));
    assert_eq!(
        error.to_string(),
        "line 5: ${AWS_SECRET_ACCESS_KEY} is not declared: a webhook file reads only the \
         variables it declares; add vars = [\"AWS_SECRET_ACCESS_KEY\"] at the top of the file \
         (with chip, or pass --var AWS_SECRET_ACCESS_KEY)"
    );
    // Declared, it is read; allowed or set by the caller (`--var`), too.
    let declared = text.replace("[\"SHOP_HOST\"]", "[\"SHOP_HOST\", \"SHOP_ENV\"]");
    let declared = declared.replace("AWS_SECRET_ACCESS_KEY", "SHOP_ENV");
    let file = WebhookFile::parse_with(&declared, env).unwrap();
    assert_eq!(
        file.webhooks()[0].callback(),
        "https://staging.shop.example.com/?s=staging"
    );
    let given = LoadOptions::new()
        .var("AWS_SECRET_ACCESS_KEY", "not-a-secret")
        .unwrap();
    let file = WebhookFile::parse_with_options(text, &given, strict).unwrap();
    assert_eq!(
        file.webhooks()[0].callback(),
        "https://staging.shop.example.com/?s=not-a-secret"
    );
    // Event names and titles are interpolated by the same rule.
    assert_error(
        "[[webhook]]\ntitle = \"${UNDECLARED}\"\ncallback = \"https://a.example\"\nall_events = true\n",
        2,
        &["${UNDECLARED} is not declared"],
    );
}

#[test]
fn the_vars_declaration_is_checked() {
    assert_error(
        "vars = [\"A\",\n  \"CHIP_API_KEY\"]\n",
        2,
        &["in vars: CHIP_API_KEY is the secret API key"],
    );
    assert_error(
        "vars = [\"A-B\"]\n",
        1,
        &["in vars: \"A-B\" is not a variable name"],
    );
    assert_error(
        "vars = [\"A\", \"A\"]\n",
        1,
        &["variable A is declared twice"],
    );
    assert_error("vars = \"A\"\n", 1, &[]);
    // After [[webhook]], TOML makes it a key of that webhook: the error says where it goes.
    assert_error(
        "[[webhook]]\ntitle = \"t\"\nvars = [\"A\"]\n",
        3,
        &["unknown field `vars`", "before the first [[webhook]]"],
    );
}

#[test]
fn the_api_key_in_use_never_goes_into_a_webhook() {
    let key = "sk_live_0123456789abcdef";
    let options = LoadOptions::new().api_key(key).allow("LIVE_KEY").unwrap();
    let exported = |name: &str| (name == "LIVE_KEY").then(|| key.to_owned());
    let cases = [
        // Exported under another name and read through a variable.
        (
            "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example/?k=${LIVE_KEY}\"\nall_events = true\n",
            3,
            "the value of LIVE_KEY contains the API key in use",
        ),
        // Written in the file itself: in the callback, in the title.
        (
            "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example/?k=sk_live_0123456789abcdef\"\nall_events = true\n",
            3,
            "the callback contains the API key in use",
        ),
        (
            "[[webhook]]\ntitle = \"key sk_live_0123456789abcdef\"\ncallback = \"https://a.example\"\nall_events = true\n",
            2,
            "the title contains the API key in use",
        ),
    ];
    for (text, line, message) in cases {
        let error = WebhookFile::parse_with_options(text, &options, exported).unwrap_err();
        let shown = error.to_string();
        assert_eq!(error.line(), Some(line), "{shown}");
        assert!(shown.contains(message), "{shown}");
        assert!(!shown.contains(key), "the key is shown: {shown}");
        assert!(!format!("{error:?}").contains(key));
    }
    // A file without the key is fine with the same options.
    let fine = "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\"\nall_events = true\n";
    assert!(WebhookFile::parse_with_options(fine, &options, exported).is_ok());
}

#[test]
fn control_characters_are_refused_after_substitution() {
    for (text, line, code) in [
        // A TOML escape in the callback: it would forge a line of the plan output.
        (
            "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example/x\\n+ create \\\"evil\\\"\"\nall_events = true\n",
            3,
            "U+000A",
        ),
        (
            "[[webhook]]\ntitle = \"t\\r\"\ncallback = \"https://a.example\"\nall_events = true\n",
            2,
            "U+000D",
        ),
        (
            "[[webhook]]\ntitle = \"t\\u001b[2J\"\ncallback = \"https://a.example\"\nall_events = true\n",
            2,
            "U+001B",
        ),
        (
            "[[webhook]]\ntitle = \"t\\u007f\"\ncallback = \"https://a.example\"\nall_events = true\n",
            2,
            "U+007F",
        ),
        (
            "[[webhook]]\ntitle = \"t\\u202e\"\ncallback = \"https://a.example\"\nall_events = true\n",
            2,
            "U+202E",
        ),
        (
            "allow_unknown_events = true\n[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example\"\nevents = [\"x\\ny\"]\n",
            5,
            "U+000A",
        ),
    ] {
        let message = assert_error(text, line, &["contains the control character", code]);
        assert!(!message.contains('\n'));
    }
    // From a variable's value: the variable is named.
    let text = "vars = [\"HOST\"]\n[[webhook]]\ntitle = \"t\"\ncallback = \"https://${HOST}/\"\nall_events = true\n";
    let error = WebhookFile::parse_with(text, |_| Some("a.example/\n+ create".into())).unwrap_err();
    assert_eq!(error.line(), Some(4));
    assert!(
        error
            .to_string()
            .contains("the value of HOST contains the control character U+000A"),
        "{error}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No input panics: any text is a file or one error.
    #[test]
    fn any_text_parses_or_errs_without_panicking(text in ".{0,300}") {
        let _ = parse(&text, |_| Some("x".into()));
    }

    /// Nearly-right files: fragments of the schema in any order.
    #[test]
    fn schema_fragments_never_panic(parts in proptest::collection::vec(prop_oneof![
        Just("[[webhook]]\n"),
        Just("title = \"${A}\"\n"),
        Just("title = \"\"\n"),
        Just("callback = \"https://${A}/x\"\n"),
        Just("callback = \"http://[::1\"\n"),
        Just("events = [\"purchase.paid\", \"x\"]\n"),
        Just("events = []\n"),
        Just("all_events = true\n"),
        Just("allow_unknown_events = true\n"),
        Just("${\n"),
        Just("\"\n"),
        Just("[webhook]\n"),
    ], 0..12)) {
        let text: String = parts.concat();
        if let Err(error) = parse(&text, |_| Some("é$".into())) {
            prop_assert!(!error.to_string().contains('\n'));
        }
    }
}

#[test]
fn the_readme_shows_this_very_file() {
    let readme = include_str!("../../../README.md");
    let section = &readme[readme.find("## Webhooks as code").unwrap()..];
    assert!(
        section.contains(&format!("```toml\n{FIXTURE}```\n")),
        "README.md's \"Webhooks as code\" file differs from tests/fixtures/plan/chip-webhooks.toml"
    );
}
