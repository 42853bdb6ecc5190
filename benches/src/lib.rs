//! Benchmarks of Chronik: see `benches/`.
