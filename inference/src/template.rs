//! Chat templates from GGUF metadata, rendered with minijinja (being written).
