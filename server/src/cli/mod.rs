//! One module per `confidant` subcommand.

pub mod generate;
pub mod kek;
pub mod model;
pub mod serve;
