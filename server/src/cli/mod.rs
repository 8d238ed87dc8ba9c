//! One module per `confidant` subcommand.

pub mod attest;
