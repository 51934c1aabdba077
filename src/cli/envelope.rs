//! `wcp-hall envelope` subcommands.

use super::{CliError, Out};

#[derive(Debug, clap::Subcommand)]
pub enum EnvelopeCommand {}

pub fn run(cmd: EnvelopeCommand, _out: &mut Out) -> Result<u8, CliError> {
    match cmd {}
}
