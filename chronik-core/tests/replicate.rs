//! `metadata-replicate` on in-memory clusters: only the metadata leader
//! answers, unknown members are refused, and a member that missed entries
//! while cut off gets them on request.

use chronik_core::testing::{Cluster, ClusterConfig};
use chronik_core::{Error, MetadataCommand, METADATA_GROUP};

fn applied(c: &Cluster, node: u64) -> u64 {
    c.engine(node).map_or(0, |e| e.metadata().applied_index())
}

#[test]
fn a_member_that_missed_entries_gets_them_and_the_target_is_the_leaders_commit() {
    for seed in [1, 2, 3] {
        let mut c = Cluster::with_config(ClusterConfig::new(3, seed));
        c.create_topic_with("a", 1, 3, 1, false).expect("topic");
        let leader = c.leader_of(METADATA_GROUP).expect("metadata leader");
        let follower = (1..=3).find(|n| *n != leader).expect("a follower");
        // Entries the follower misses (maintenance of the cut-off node
        // itself: it leads nothing, so nothing else moves).
        c.isolate(follower);
        for on in [true, false, true, false] {
            c.metadata_command(MetadataCommand::SetMaintenance { node: follower, on })
                .expect("recorded");
        }
        let commit = c
            .engine(leader)
            .map(|e| {
                e.status()
                    .iter()
                    .find(|g| g.group == METADATA_GROUP)
                    .map_or(0, |g| g.commit)
            })
            .expect("leader up");
        assert!(applied(&c, follower) < commit, "seed {seed}: it lags");
        c.heal();
        let r = c
            .replicate_metadata(leader, Some(follower))
            .expect("the leader answers");
        assert!(r.target >= commit, "seed {seed}: {r:?} below {commit}");
        assert_eq!(r.members.len(), 1, "seed {seed}: {r:?}");
        assert_eq!(r.members[0].node, follower);
        assert!(r.members[0].sent && r.members[0].matched < r.target);
        assert!(
            c.run_until(2_000, |c| applied(c, follower) >= r.target),
            "seed {seed}: node {follower} applied {} of {}",
            applied(&c, follower),
            r.target
        );
    }
}

#[test]
fn only_the_leader_answers_and_unknown_members_are_refused() {
    let mut c = Cluster::with_config(ClusterConfig::new(3, 7));
    let leader = c.elect(METADATA_GROUP, 10_000).expect("metadata leader");
    c.run_for(500); // the followers hear of it
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    match c.replicate_metadata(follower, None) {
        Err(Error::NotLeader { leader_hint, .. }) => assert_eq!(leader_hint, Some(leader)),
        other => panic!("a follower answered: {other:?}"),
    }
    assert!(matches!(
        c.replicate_metadata(leader, Some(9)),
        Err(Error::UnknownNode { node: 9 })
    ));
    // Everyone up to date: nothing sent, the target is the commit.
    c.run_for(500);
    let r = c.replicate_metadata(leader, None).expect("answered");
    assert_eq!(r.members.len(), 2);
    assert!(r.members.iter().all(|m| !m.sent), "{r:?}");
}
