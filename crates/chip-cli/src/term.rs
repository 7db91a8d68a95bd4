//! Writing to the terminal: stdout writes that survive a closed pipe, and text from the network
//! made safe to print.

use std::fmt;
use std::io::{self, Write};

use crate::common::Failure;

/// Writes `args` and a newline to stdout.
///
/// A closed pipe (`chip webhooks list --json --all | head -1`) is not an error to report: it becomes
/// [`Failure::closed`], which ends the command quietly with exit 0. Any other write error is a
/// one-line failure.
pub fn write_line(args: fmt::Arguments<'_>) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
        .map_err(write_failure)
}

/// What a failed stdout write means for the command.
pub fn write_failure(error: io::Error) -> Failure {
    if error.kind() == io::ErrorKind::BrokenPipe {
        Failure::closed()
    } else {
        Failure::op(format!("cannot write to standard output: {error}"))
    }
}

/// Writes one line to stderr, ignoring a closed stderr (there is nowhere left to report it).
pub fn warn_line(args: fmt::Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    let _ = stderr
        .write_fmt(args)
        .and_then(|()| stderr.write_all(b"\n"));
}

/// Writes a prompt to stderr without a newline and flushes it, ignoring a closed stderr.
pub fn warn_prompt(args: fmt::Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_fmt(args).and_then(|()| stderr.flush());
}

/// `println!` for stdout paths: formats a line and returns `Result<(), Failure>` instead of
/// panicking when stdout is gone.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::term::write_line(format_args!($($arg)*))
    };
}

/// Whether `c` could change what a terminal shows beyond printing a character: C0 and C1 control
/// characters (escape sequences start with ESC or CSI), DEL, and the Unicode bidirectional
/// overrides and isolates that reorder the rest of a line.
fn is_terminal_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Text from a server or a delivery, safe to print on one line: every control character (newlines
/// included) becomes a space.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if is_terminal_control(c) { ' ' } else { c })
        .collect()
}

/// Multi-line text from a server (a PEM), safe to print: newlines stay, every other control
/// character is dropped.
pub fn clean_lines(text: &str) -> String {
    text.chars()
        .filter(|&c| c == '\n' || !is_terminal_control(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_cannot_reach_the_terminal() {
        let hostile = "ok\x1b]0;pwned\x07\x1b[2J\r\u{9b}31m\u{202e}txt.exe\x7f";
        let line = clean(hostile);
        assert!(!line.chars().any(is_terminal_control), "{line:?}");
        assert!(line.starts_with("ok"));
        let pem = clean_lines("-----BEGIN\x1b[2J-----\nAAAA\r\n-----END-----\n");
        assert_eq!(pem, "-----BEGIN[2J-----\nAAAA\n-----END-----\n");
    }
}
