//! Leadership handoff on in-memory clusters: a node that leaves hands
//! every group it leads to an in-sync peer and takes none back, a node in
//! maintenance does the same until it leaves maintenance, and produces go
//! on throughout.

use chronik_core::testing::{Cluster, ClusterConfig};
use chronik_core::{Error, MetadataCommand, MetadataResponse, Role};

/// Groups `node` leads, by its own account.
fn led_by(c: &Cluster, node: u64) -> Vec<u64> {
    c.engine(node)
        .map(|e| {
            e.status()
                .iter()
                .filter(|g| g.role == Role::Leader)
                .map(|g| g.group)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_leaving_node_hands_every_group_over_and_takes_none_back() {
    for seed in [1, 2, 3, 4] {
        let mut c = Cluster::with_config(ClusterConfig::new(3, seed));
        let parts = c.create_topic_with("t", 6, 3, 2, false).expect("topic");
        for p in &parts {
            c.produce_ok(p, "before");
        }
        // The node leading the most groups leaves (the metadata group too
        // if it leads it).
        let node = (1..=3).max_by_key(|n| led_by(&c, *n).len()).expect("nodes");
        assert!(!led_by(&c, node).is_empty(), "seed {seed}");
        c.begin_leaving(node);
        let handed = c.run_until(5_000, |c| {
            c.engine(node)
                .is_some_and(|e| e.leadership_to_hand_off().is_empty())
        });
        assert!(
            handed,
            "seed {seed}: node {node} still has {:?}",
            c.engine(node).map(|e| e.leadership_to_hand_off())
        );
        // Well within an election timeout per group: transfers, not
        // elections after a timeout.
        for p in &parts {
            let g = c.group_of(p).expect("group");
            let leader = c.leader_of(g).expect("a leader");
            assert_ne!(leader, node, "seed {seed}: {p}");
        }
        // It never leads again, even over many election timeouts, and the
        // others keep serving.
        for round in 0..10 {
            c.run_for(1_000);
            assert!(led_by(&c, node).is_empty(), "seed {seed} round {round}");
            for p in &parts {
                let leader = c.serving(p, 10_000).expect("served");
                assert_ne!(leader, node);
            }
        }
        for p in &parts {
            c.produce_ok(p, "after");
        }
        // Once it is gone (the driver stops it), nothing is lost.
        c.crash(node);
        for p in &parts {
            c.produce_ok(p, "without");
        }
        c.restart(node);
        assert!(c.converge(60_000), "seed {seed}");
        c.check_acked_durable();
        c.checker.assert_ok();
    }
}

#[test]
fn a_node_in_maintenance_leads_nothing_until_it_leaves_maintenance() {
    let mut c = Cluster::with_config(ClusterConfig::new(3, 7));
    let parts = c.create_topic_with("t", 6, 3, 2, false).expect("topic");
    let node = 2;
    let preferred: usize = parts
        .iter()
        .filter(|p| {
            c.engine(1)
                .and_then(|e| e.metadata().partition(p).ok().map(|m| m.preferred_leader))
                == Some(node)
        })
        .count();
    assert!(preferred > 0, "node 2 is some partition's preferred leader");
    assert_eq!(
        c.metadata_command(MetadataCommand::SetMaintenance { node, on: true }),
        Ok(MetadataResponse::MaintenanceSet { node, on: true })
    );
    assert!(c.run_until(5_000, |c| led_by(c, node).is_empty()));
    for _ in 0..5 {
        c.run_for(2_000);
        assert!(led_by(&c, node).is_empty(), "leadership came back");
    }
    for p in &parts {
        c.produce_ok(p, "during");
    }
    // The last node out of maintenance cannot go in too.
    assert!(c
        .metadata_command(MetadataCommand::SetMaintenance { node: 1, on: true })
        .is_ok());
    let refused = c.metadata_command(MetadataCommand::SetMaintenance { node: 3, on: true });
    assert!(
        matches!(&refused, Err(Error::InvalidRequest { reason }) if reason.contains("last node out of maintenance")),
        "{refused:?}"
    );
    assert!(c
        .metadata_command(MetadataCommand::SetMaintenance { node: 1, on: false })
        .is_ok());
    assert_eq!(
        c.metadata_command(MetadataCommand::SetMaintenance { node: 9, on: true }),
        Err(Error::UnknownNode { node: 9 })
    );
    // Out of maintenance: its preferred leaderships come back.
    assert!(c
        .metadata_command(MetadataCommand::SetMaintenance { node, on: false })
        .is_ok());
    assert!(
        c.run_until(30_000, |c| led_by(c, node).len() >= preferred),
        "node 2 leads {:?}",
        led_by(&c, node)
    );
    c.checker.assert_ok();
}
