//! The seeded simulation as a test: `MADSIM_TEST_SEED=N` runs seed N (the
//! replay command every failure prints), `MADSIM_TEST_NUM=K` runs K seeds,
//! `CHRONIK_BUG=NAME` switches a planted bug on (to replay its catch).
//! See `chronik_sim::scenario` for what a seed does.

#![cfg(madsim)]

use chronik_core::planted::{self, Bug};
use chronik_sim::scenario::{replay_command, run};

#[madsim::test]
async fn acknowledged_records_survive_faults() {
    if let Ok(name) = std::env::var("CHRONIK_BUG") {
        let bug = Bug::from_name(&name).unwrap_or_else(|| panic!("unknown planted bug {name:?}"));
        planted::activate(Some(bug));
    }
    let report = run(true).await;
    let seed = report.seed;
    println!(
        "seed {seed}: executed {:?}; faults {:?}; {} topics created during faults; {} sends and {} polls ok ({} follower reads); {} ops checked; node-side {:?}; min ISR: {} refused, {} after append; {:.1} simulated seconds",
        report.executed,
        report.faults,
        report.topics_created_late,
        report.sends_ok,
        report.polls_ok,
        report.follower_reads,
        report.ops,
        report.node,
        report.refused_min_isr,
        report.appended_below_min_isr,
        report.sim_secs,
    );
    if report.failed() {
        let file = report.write_history();
        panic!(
            "seed {seed} failed:\n{}\nhistory: {}\nreplay: {}",
            report.failure(),
            file.display(),
            replay_command(seed)
        );
    }
}
