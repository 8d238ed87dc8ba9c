//! Model architectures.

/// Architectures (`general.architecture`) this engine runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];
