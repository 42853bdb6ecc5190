//! A replica whose log lost entries it had acknowledged (a corrupt WAL
//! record cut away, with everything after it) abstains from elections
//! until it holds a commit of its leader's term, and fetches what it lost.

use chronik_core::testing::{Cluster, ClusterConfig};
use chronik_core::{GroupId, MetadataCommand, Role, METADATA_GROUP};

fn status(c: &Cluster, node: u64, group: GroupId) -> chronik_core::GroupStatus {
    c.engine(node)
        .and_then(|e| e.group_status(group))
        .expect("node up, group hosted")
}

/// Metadata entries that change nothing else: maintenance on and off for
/// `node`.
fn metadata_churn(c: &mut Cluster, node: u64, times: usize) {
    for i in 0..times {
        c.metadata_command(MetadataCommand::SetMaintenance {
            node,
            on: i % 2 == 0,
        })
        .expect("recorded");
    }
}

#[test]
fn a_cut_replica_abstains_so_a_leader_without_committed_entries_cannot_win() {
    for seed in [1, 2, 3] {
        let mut c = Cluster::with_config(ClusterConfig::new(3, seed));
        let leader = c.elect(METADATA_GROUP, 10_000).expect("metadata leader");
        c.run_for(500);
        let mut others = (1..=3).filter(|n| *n != leader);
        let (cut, behind) = (others.next().unwrap(), others.next().unwrap());
        // Entries committed by the leader and `cut` alone: `behind` is
        // cut off and misses them.
        c.isolate(behind);
        metadata_churn(&mut c, behind, 6);
        let committed = status(&c, leader, METADATA_GROUP).commit;
        assert!(status(&c, behind, METADATA_GROUP).last_index < committed);
        // `cut` loses its log tail; the leader goes down.
        c.crash(cut);
        c.cut_log(cut, 1);
        c.crash(leader);
        c.heal();
        c.restart(cut);
        let st = status(&c, cut, METADATA_GROUP);
        assert!(st.abstaining, "seed {seed}: {st:?}");
        assert!(st.last_index < committed, "seed {seed}: the tail is gone");
        // `behind` lacks committed entries: only `cut`'s vote could make
        // it leader, and `cut` abstains.
        c.run_for(5_000);
        for n in [cut, behind] {
            assert_ne!(
                status(&c, n, METADATA_GROUP).role,
                Role::Leader,
                "seed {seed}: node {n} led without the committed entries"
            );
        }
        // The old leader returns: a leader with every commit is elected,
        // `cut` catches up and votes again.
        c.restart(leader);
        assert!(
            c.run_until(10_000, |c| {
                let st = status(c, cut, METADATA_GROUP);
                !st.abstaining && st.last_index >= committed
            }),
            "seed {seed}: {:?}",
            status(&c, cut, METADATA_GROUP)
        );
        assert!(c.converge(10_000), "seed {seed}: converges");
        assert!(
            c.checker.violations().is_empty(),
            "seed {seed}: {:?}",
            c.checker.violations()
        );
    }
}

#[test]
fn a_cut_replica_catches_up_from_a_leader_that_counted_its_lost_entries() {
    for seed in [4, 5] {
        let mut c = Cluster::with_config(ClusterConfig::new(3, seed));
        let partitions = c.create_topic_with("t", 1, 3, 2, false).expect("topic");
        let p = &partitions[0];
        for i in 0..20 {
            c.produce_ok(p, &format!("r{i}"));
        }
        let group = c.group_of(p).expect("group");
        let leader = c.serving(p, 5_000).expect("partition leader");
        let follower = (1..=3).find(|n| *n != leader).expect("a follower");
        let before = status(&c, follower, group).last_index;
        // The leader's progress still says the follower holds `before`.
        c.crash(follower);
        c.cut_log(follower, 2);
        c.restart(follower);
        assert!(status(&c, follower, group).abstaining);
        assert!(status(&c, follower, group).last_index < before);
        for i in 20..25 {
            c.produce_ok(p, &format!("r{i}"));
        }
        assert!(
            c.run_until(10_000, |c| {
                let st = status(c, follower, group);
                !st.abstaining && st.last_index >= before
            }),
            "seed {seed}: the follower stays behind: {:?}",
            status(&c, follower, group)
        );
        assert!(c.converge(10_000), "seed {seed}: converges");
        assert!(
            c.checker.violations().is_empty(),
            "seed {seed}: {:?}",
            c.checker.violations()
        );
    }
}
