//! `wcp-hall receipts` subcommands.

use super::{CliError, Out};

#[derive(Debug, clap::Subcommand)]
pub enum ReceiptsCommand {}

pub fn run(cmd: ReceiptsCommand, _out: &mut Out) -> Result<u8, CliError> {
    match cmd {}
}
