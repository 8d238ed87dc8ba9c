//! The Confidant server: an OpenAI-compatible HTTP API over the inference
//! engine, with health, readiness and Prometheus metrics.
// Unsafe code is denied everywhere but `locked` (mmap/mlock/madvise).
#![deny(unsafe_code)]

pub mod access;
pub mod api;
pub mod attestation;
pub mod audit;
pub mod config;
pub mod loader;
pub mod locked;
pub mod metrics;
pub mod state;
pub mod tls;
pub mod watermark;
