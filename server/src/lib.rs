//! The Confidant server: an OpenAI-compatible HTTP API over the inference
//! engine, with health, readiness and Prometheus metrics.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod loader;
pub mod metrics;
pub mod state;
pub mod watermark;
