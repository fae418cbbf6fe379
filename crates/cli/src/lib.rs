//! `ddb-relay`, the operator CLI, as a library: the commands run against the
//! [`relay_aws::operator::Aws`] traits, so the same code drives AWS, an
//! emulator, or the in-memory fakes of the model tests.
//!
//! - [`args`]: the command line (validated before any AWS call);
//! - [`ctx`]: what every command needs (services, stack, clock, output);
//! - [`commands`]: one file per command, each returning a typed report;
//! - [`repair`]: the repair routine `verify --repair` and `dlq repair` share;
//! - [`transform`]: the transform every command maps items with;
//! - [`report`]: text or JSON output and exit codes;
//! - [`plan`]: `--plan FILE`: a command on every table pair of a plan;
//! - [`worker`]: the worker Lambda's side of a copy fanned out on the work queue.

pub mod args;
pub mod commands;
pub mod ctx;
pub mod plan;
pub mod repair;
pub mod report;
pub mod spill;
pub mod transform;
pub mod worker;

pub use report::EXIT_NO_GO;
