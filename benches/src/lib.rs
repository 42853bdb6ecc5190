//! Benchmarks of Chronik: the `chronik-bench` load tool and its side-by-side
//! comparison with etcd (`compare`), and criterion suites in `benches/`.

pub mod compare;
