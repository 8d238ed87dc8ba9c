//! One module per `confidant` subcommand.

pub mod apikey;
pub mod attest;
pub mod audit;
pub mod generate;
pub mod kbs;
pub mod kek;
pub mod model;
pub mod proxy;
pub mod receipt;
pub mod serve;
pub mod update;
pub mod update_keys;
pub mod verify;
pub mod watermark;
