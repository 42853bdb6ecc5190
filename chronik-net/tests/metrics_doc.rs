//! `docs/metrics.md` lists every metric family the node exports, with its
//! type, and nothing else.

use chronik_net::metrics::Metrics;
use std::collections::BTreeSet;

/// `(name, type)` of each row of the reference's tables: rows start with
/// the family name in backticks, then its type.
fn documented() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md exists");
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_string(), cells.get(2)?.to_string()))
        })
        .collect()
}

#[test]
fn every_exported_family_is_documented_with_its_type() {
    let exported: BTreeSet<(String, String)> = Metrics::with_options(1, true)
        .families()
        .iter()
        .map(|(n, k)| (n.clone(), k.to_string()))
        .collect();
    if std::env::var_os("PRINT_FAMILIES").is_some() {
        for (n, k) in &exported {
            println!("{n} {k}");
        }
    }
    let documented = documented();
    let missing: Vec<_> = exported.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "exported but not in docs/metrics.md (or with another type): {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "in docs/metrics.md but not exported: {unknown:?}"
    );
    assert!(exported.len() >= 50, "{} families", exported.len());
}
