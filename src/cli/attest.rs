//! `wcp-hall attest` subcommands.

use super::{CliError, Out};

#[derive(Debug, clap::Subcommand)]
pub enum AttestCommand {}

pub fn run(cmd: AttestCommand, _out: &mut Out) -> Result<u8, CliError> {
    match cmd {}
}
