//! TUF-signed updates: client, repository tooling, A/B install, rollback and anti-rollback counters.
//!
//! Not implemented yet: this crate is a placeholder in the workspace until its
//! issue lands. It exposes nothing and pretends nothing.
#![forbid(unsafe_code)]
