//! One module per `confidant` subcommand.

pub mod kek;
pub mod model;
