//! One module per `confidant` subcommand.

pub mod generate;
pub mod serve;
pub mod update;
