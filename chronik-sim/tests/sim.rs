//! The seeded simulation as a test: `MADSIM_TEST_SEED=N` runs seed N (the
//! replay command every failure prints), `MADSIM_TEST_NUM=K` runs K seeds.
//! See `chronik_sim::scenario` for what a seed does.

#![cfg(madsim)]

use chronik_sim::scenario::{replay_command, run};

#[madsim::test]
async fn acknowledged_records_survive_faults() {
    let report = run(true).await;
    let seed = report.seed;
    println!(
        "seed {seed}: executed {:?}; faults {:?}; {} topics created during faults; {} sends and {} polls ok ({} follower reads); {} ops checked; {} elections, {} entries applied; min ISR: {} refused, {} after append, {} acks checked",
        report.executed,
        report.faults,
        report.topics_created_late,
        report.sends_ok,
        report.polls_ok,
        report.follower_reads,
        report.ops,
        report.leader_elections,
        report.entries_applied,
        report.refused_min_isr,
        report.appended_below_min_isr,
        report.produce_acks_checked
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
