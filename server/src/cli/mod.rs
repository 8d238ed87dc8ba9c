//! One module per `confidant` subcommand.
