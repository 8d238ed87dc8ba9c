//! Benchmarks and peer comparisons for Confidant; the benchmarks themselves live in `benches/`.
#![forbid(unsafe_code)]
