use super::*;
use crate::metadata::{MetadataCommand, MetadataState};
use crate::{NodeInfo, Time};
use std::collections::BTreeSet;

fn led(group: u64, transferable: bool) -> LedGroup {
    LedGroup {
        group,
        name: format!("t/{group}"),
        transferable,
    }
}

fn seen(in_flight: usize, led: Vec<LedGroup>, wal_synced: bool) -> Observation {
    Observation {
        in_flight,
        led,
        wal_synced,
    }
}

#[test]
fn phases_follow_each_other_as_their_work_ends() {
    let mut s = Shutdown::new(ShutdownConfig::default(), Time(1_000));
    assert_eq!(
        s.advance(Time(1_010), &seen(2, vec![led(1, true)], false)),
        None
    );
    assert_eq!(
        s.advance(Time(1_020), &seen(0, vec![led(1, true)], false)),
        Some(Phase::TransferLeadership)
    );
    assert_eq!(
        s.advance(Time(1_030), &seen(0, vec![led(1, true)], false)),
        None
    );
    assert_eq!(
        s.advance(Time(1_080), &seen(0, vec![], false)),
        Some(Phase::SyncWal)
    );
    assert_eq!(s.advance(Time(1_090), &seen(0, vec![], false)), None);
    assert_eq!(
        s.advance(Time(1_095), &seen(0, vec![], true)),
        Some(Phase::Stop)
    );
    let r = s.stopped(Time(1_100));
    assert!(r.clean(), "{r:?}");
    let durations: Vec<(Phase, u64)> = r.phases.iter().map(|p| (p.phase, p.duration_ms)).collect();
    assert_eq!(
        durations,
        vec![
            (Phase::Drain, 20),
            (Phase::TransferLeadership, 60),
            (Phase::SyncWal, 15),
            (Phase::Stop, 5)
        ]
    );
    assert_eq!(r.total_ms, 100);
    assert_eq!(r.phases[1].detail, "1 groups handed over");
}

#[test]
fn a_phase_that_runs_out_of_time_names_what_was_left() {
    let config = ShutdownConfig {
        drain_timeout_ms: 100,
        transfer_timeout_ms: 500,
        sync_timeout_ms: 50,
    };
    let mut s = Shutdown::new(config, Time(0));
    assert_eq!(s.poll_timeout(), Time(100));
    assert_eq!(s.advance(Time(99), &seen(3, vec![], false)), None);
    assert_eq!(
        s.advance(Time(100), &seen(3, vec![], false)),
        Some(Phase::TransferLeadership)
    );
    let groups = vec![led(7, true), led(3, true), led(9, false)];
    assert_eq!(s.advance(Time(100), &seen(0, groups.clone(), false)), None);
    assert_eq!(s.poll_timeout(), Time(600));
    assert_eq!(s.advance(Time(599), &seen(0, groups.clone(), false)), None);
    assert_eq!(
        s.advance(Time(600), &seen(0, groups, false)),
        Some(Phase::SyncWal)
    );
    assert_eq!(
        s.advance(Time(650), &seen(0, vec![], false)),
        Some(Phase::Stop)
    );
    let r = s.stopped(Time(651));
    assert!(!r.clean());
    let timed_out: Vec<(Phase, Vec<String>)> =
        r.timed_out().map(|(p, w)| (*p, w.clone())).collect();
    assert_eq!(
        timed_out,
        vec![
            (Phase::Drain, vec!["3 requests in flight".to_string()]),
            (
                Phase::TransferLeadership,
                vec!["t/3".to_string(), "t/7".to_string()]
            ),
            (Phase::SyncWal, vec!["WAL not synced".to_string()]),
        ]
    );
    assert!(
        r.phases[1].detail.contains("nobody to take t/9"),
        "{}",
        r.phases[1].detail
    );
}

#[test]
fn a_group_nobody_can_take_is_not_waited_for() {
    let mut s = Shutdown::new(ShutdownConfig::default(), Time(0));
    s.advance(Time(0), &seen(0, vec![], false));
    assert_eq!(
        s.advance(Time(1), &seen(0, vec![led(1, false)], false)),
        Some(Phase::SyncWal)
    );
    assert_eq!(s.reports()[1].outcome, PhaseOutcome::Completed);
}

#[test]
fn stopping_at_once_cuts_the_phases_left_short() {
    let mut s = Shutdown::new(ShutdownConfig::default(), Time(0));
    s.advance(Time(5), &seen(0, vec![], false));
    let r = s.stopped(Time(8));
    assert!(!r.clean());
    let phases: Vec<Phase> = r.phases.iter().map(|p| p.phase).collect();
    assert_eq!(
        phases,
        vec![
            Phase::Drain,
            Phase::TransferLeadership,
            Phase::SyncWal,
            Phase::Stop
        ]
    );
}

#[test]
fn config_refuses_zero_and_absurd_timeouts() {
    assert!(ShutdownConfig::default().validate().is_ok());
    assert_eq!(ShutdownConfig::default().worst_case_ms(), 45_000);
    for bad in [0, PHASE_TIMEOUT_MAX_MS + 1] {
        let c = ShutdownConfig {
            transfer_timeout_ms: bad,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("shutdown.transfer_timeout_ms"), "{e}");
    }
}

fn cluster(nodes: u64) -> MetadataState {
    let mut md = MetadataState::new();
    let infos = (1..=nodes)
        .map(|id| NodeInfo {
            id,
            client_addr: format!("10.0.0.{id}:9092"),
            peer_addr: format!("10.0.0.{id}:9093"),
            rack: None,
        })
        .collect();
    md.apply(1, MetadataCommand::Bootstrap { nodes: infos })
        .unwrap();
    md.apply(
        2,
        MetadataCommand::CreateTopic {
            name: "t".into(),
            partitions: 3,
            replication_factor: 3,
            min_insync_replicas: 2,
            unclean_leader_election: false,
        },
    )
    .unwrap();
    md
}

#[test]
fn restart_is_safe_with_every_replica_in_sync_and_not_with_one_missing() {
    let mut md = cluster(3);
    let voters = [1, 2, 3];
    let all: BTreeSet<u64> = [1, 2, 3].into();
    let ok = restart_check(&md, 2, &voters, &all).unwrap();
    assert!(ok.safe, "{ok:?}");
    assert_eq!(ok.partitions, 3);

    // Node 3 fell out of the ISR of the group of t/1: restarting node 2
    // would leave that partition one in-sync replica.
    let p1 = md.topic("t").unwrap().partitions[1].clone();
    md.apply(
        3,
        MetadataCommand::UpdateIsr {
            group: p1.group,
            leader: p1.isr[0],
            expected: p1.isr.clone(),
            isr: p1.isr.iter().copied().filter(|n| *n != 3).collect(),
            reason: "test".into(),
        },
    )
    .unwrap();
    let no = restart_check(&md, 2, &voters, &all).unwrap();
    assert!(!no.safe);
    assert_eq!(no.reasons.len(), 1, "{:?}", no.reasons);
    assert!(
        no.reasons[0].starts_with("t-1: 1 in-sync replicas besides node 2"),
        "{:?}",
        no.reasons
    );
    // Restarting node 3 itself is fine: it is not in sync anyway.
    assert!(restart_check(&md, 3, &voters, &all).unwrap().safe);

    // A dead peer breaks the metadata majority too.
    let two: BTreeSet<u64> = [1, 2].into();
    let r = restart_check(&md, 1, &voters, &two).unwrap();
    assert!(
        r.reasons.iter().any(|r| r.starts_with("metadata group")),
        "{r:?}"
    );
}

#[test]
fn restart_check_refuses_unknown_and_removed_nodes() {
    let md = cluster(3);
    let all: BTreeSet<u64> = [1, 2, 3].into();
    assert_eq!(
        restart_check(&md, 9, &[1, 2, 3], &all).unwrap_err(),
        crate::Error::UnknownNode { node: 9 }
    );
}
