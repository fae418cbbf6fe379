//! Command results: every command returns a typed report that prints as
//! text or as one JSON document (its `Serialize` form), and sets the exit
//! code.

use serde::Serialize;

use crate::ctx::Output;

/// Exit code for NO-GO: a cutover NO-GO, a preflight blocker, a verify
/// divergence, `finish` NOT READY, `adopt` drift.
pub const EXIT_NO_GO: i32 = 3;

/// What a command says when it is done.
pub trait Report: Serialize {
    /// The text form (`--output text`).
    fn text(&self) -> String;
    /// 0 done / GO, [`EXIT_NO_GO`] for any NO-GO.
    fn exit_code(&self) -> i32 {
        0
    }
}

/// Prints a report on stdout as asked; returns its exit code.
#[allow(clippy::print_stdout)] // the CLI's output
pub fn emit<R: Report>(output: Output, report: &R) -> i32 {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        ),
        Output::Text => println!("{}", report.text()),
    }
    report.exit_code()
}
