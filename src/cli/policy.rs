//! `wcp-hall policy` subcommands.

use super::{CliError, Out};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {}

pub fn run(cmd: PolicyCommand, _out: &mut Out) -> Result<u8, CliError> {
    match cmd {}
}
