//! Datadriven golden scenarios (after etcd's rafttest): each file under
//! `testdata/` drives a seeded in-memory cluster and records what it shows.
//! Rewrite expectations with `REWRITE=1 cargo test -p chronik-core --test scenarios`
//! and review the diff.

use bytes::Bytes;
use chronik_core::membership::MembershipChange;
use chronik_core::testing::{Cluster, ClusterConfig};
use chronik_core::{Command, MetadataCommand, NodeId, PartitionId, Response, METADATA_GROUP};
use datadriven::TestCase;
use std::fmt::Write;

fn partition(tc: &mut TestCase) -> PartitionId {
    let s: String = tc.take_arg("partition").expect("partition=TOPIC-N");
    let (topic, p) = s.rsplit_once('-').expect("partition=TOPIC-N");
    PartitionId::new(topic, p.parse().expect("partition number"))
}

/// `via=leader` (default: the leader, once it serves), `via=follower` (the
/// lowest-numbered other replica, whichever node won the election) or
/// `via=N`.
fn via(tc: &mut TestCase, c: &mut Cluster, p: &PartitionId) -> Option<NodeId> {
    match tc.try_take_arg::<String>("via").expect("via") {
        None => c.serving(p, 10_000),
        Some(v) if v == "leader" => c.serving(p, 10_000),
        Some(v) if v == "follower" => {
            let leader = c.serving(p, 10_000);
            let first = *c.node_ids().first()?;
            let meta = c.engine(first)?.metadata().partition(p).ok()?.clone();
            meta.replicas
                .into_iter()
                .filter(|n| Some(*n) != leader)
                .min()
        }
        Some(v) => Some(v.parse().expect("via=N")),
    }
}

fn wait_reply(c: &mut Cluster, rid: u64) -> String {
    c.run_until(10_000, |c| c.replies.contains_key(&rid));
    match c.replies.get(&rid) {
        None => "no reply".into(),
        Some(Ok(Response::Applied(a))) => {
            format!("ok base_offset={} count={}", a.base_offset, a.count)
        }
        Some(Ok(Response::Query(f))) => {
            let recs: Vec<String> = f
                .records
                .iter()
                .map(|(o, r)| format!("{o}:{}", String::from_utf8_lossy(r)))
                .collect();
            format!(
                "ok high_watermark={} records=[{}]",
                f.high_watermark,
                recs.join(" ")
            )
        }
        Some(Ok(Response::Metadata(m))) => format!("ok {m:?}"),
        Some(Err(e)) => format!("error {}: {e}", e.code()),
    }
}

fn status(c: &Cluster) -> String {
    let mut out = String::new();
    for id in c.node_ids() {
        let Some(e) = c.engine(id) else {
            writeln!(out, "node {id}: down").expect("writing to a String");
            continue;
        };
        for s in e.status() {
            writeln!(
                out,
                "node {id} group {}: {} term={} leader={} commit={} applied={} snapshot={} voters={:?}",
                s.group,
                s.role,
                s.term,
                s.leader.map_or("-".into(), |l| l.to_string()),
                s.commit,
                s.applied,
                s.snapshot_index,
                s.voters
            )
            .expect("writing to a String");
        }
    }
    out
}

fn run_case(cluster: &mut Option<Cluster>, tc: &mut TestCase) -> String {
    if tc.directive == "cluster" {
        let nodes: u64 = tc.take_arg("nodes").expect("nodes");
        let seed: u64 = tc.take_arg("seed").expect("seed");
        let mut cfg = ClusterConfig::new(nodes, seed);
        if let Some(n) = tc.try_take_arg("compact").expect("compact") {
            cfg.log_compact_threshold_entries = n;
        }
        *cluster = Some(Cluster::with_config(cfg));
        return "ok\n".into();
    }
    let c = cluster.as_mut().expect("`cluster` comes first");
    let out = match tc.directive.as_str() {
        "elect" => {
            let group: u64 = tc
                .try_take_arg("group")
                .expect("group")
                .unwrap_or(METADATA_GROUP);
            match c.elect(group, 10_000) {
                Some(l) => {
                    let term = c
                        .engine(l)
                        .and_then(|e| e.group_status(group))
                        .map_or(0, |s| s.term);
                    format!("leader={l} term={term}")
                }
                None => "no leader".into(),
            }
        }
        "run" => {
            let ms: u64 = tc.take_arg("ms").expect("ms");
            c.run_for(ms);
            "ok".into()
        }
        "status" => return status(c),
        "create-topic" => {
            let name: String = tc.take_arg("name").expect("name");
            let partitions: u32 = tc.take_arg("partitions").expect("partitions");
            let rf: u32 = tc.take_arg("rf").expect("rf");
            // `via=N` or `via=leader` sends the raw command to one node (the
            // metadata leader, for refusals); without it the harness
            // creates the topic and reports the placement.
            let via = tc.try_take_arg::<String>("via").expect("via").map(|v| {
                if v == "leader" {
                    c.run_until(10_000, |c| c.leader_of(METADATA_GROUP).is_some());
                    c.leader_of(METADATA_GROUP).expect("a metadata leader")
                } else {
                    v.parse().expect("via=N or via=leader")
                }
            });
            match via {
                Some(node) => {
                    let rid = c.command(
                        node,
                        Command::Metadata(MetadataCommand::CreateTopic {
                            name,
                            partitions,
                            replication_factor: rf,
                            min_insync_replicas: 1,
                            unclean_leader_election: false,
                        }),
                    );
                    wait_reply(c, rid)
                }
                None => match c.create_topic(&name, partitions, rf) {
                    Ok(ids) => {
                        let mut out = String::new();
                        for p in ids {
                            let l = c.leader_of(METADATA_GROUP).expect("metadata leader");
                            let md = c.engine(l).expect("up").metadata();
                            let m = md.partition(&p).expect("exists");
                            let leader = c.leader_of(m.group).map_or("-".into(), |n| n.to_string());
                            writeln!(
                                out,
                                "{p}: group={} replicas={:?} preferred={} leader={leader}",
                                m.group, m.replicas, m.preferred_leader
                            )
                            .expect("writing to a String");
                        }
                        return out;
                    }
                    Err(e) => e,
                },
            }
        }
        "produce" => {
            let p = partition(tc);
            let records: Vec<String> = tc.take_args("records").expect("records");
            let Some(node) = via(tc, c, &p) else {
                return "no leader\n".into();
            };
            let rid = c.produce(node, &p, records.into_iter().map(Bytes::from).collect());
            wait_reply(c, rid)
        }
        "fetch" => {
            let p = partition(tc);
            let offset: u64 = tc.try_take_arg("offset").expect("offset").unwrap_or(0);
            let Some(node) = via(tc, c, &p) else {
                return "no leader\n".into();
            };
            let rid = c.fetch(node, &p, offset);
            wait_reply(c, rid)
        }
        "crash" => {
            c.crash(tc.take_arg("node").expect("node"));
            "ok".into()
        }
        "restart" => {
            c.restart(tc.take_arg("node").expect("node"));
            "ok".into()
        }
        "isolate" => {
            c.isolate(tc.take_arg("node").expect("node"));
            "ok".into()
        }
        "heal" => {
            c.heal();
            "ok".into()
        }
        "converge" => {
            if c.converge(30_000) {
                "converged".into()
            } else {
                "did not converge".into()
            }
        }
        "check" => {
            c.check_acked_durable();
            // A violation fails the test outright: it must never be
            // written into the expected output by a REWRITE.
            c.checker.assert_ok();
            format!(
                "ok: {} acknowledged produces durable, invariants hold",
                c.acked.len()
            )
        }
        "add-node" => {
            // Starts a new empty node and asks the metadata leader to add it.
            let info = c.add_node();
            membership(c, MembershipChange::Add(info))
        }
        "remove-node" => {
            let id: u64 = tc.take_arg("node").expect("node");
            membership(c, MembershipChange::Remove(id))
        }
        "add-node-info" => {
            // Asks to add a node that is not started (for refusals).
            let id: u64 = tc.take_arg("id").expect("id");
            let host: String = tc.take_arg("host").expect("host");
            let peer: u32 = tc.take_arg("peer_port").expect("peer_port");
            let client: u32 = tc.take_arg("client_port").expect("client_port");
            membership(
                c,
                MembershipChange::Add(chronik_core::NodeInfo {
                    id,
                    peer_addr: format!("{host}:{peer}"),
                    client_addr: format!("{host}:{client}"),
                    rack: None,
                }),
            )
        }
        "crash-metadata-leader-when" => {
            // Runs until the metadata leader's configuration matches, then
            // crashes it: `joint` (entered, not left) or `learner`.
            let when: String = tc.take_arg("state").expect("state");
            let leader = c.leader_of(METADATA_GROUP).expect("metadata leader");
            let hit = c.run_until(10_000, |c| {
                c.engine(leader).is_some_and(|e| {
                    let v = e.membership_view();
                    match when.as_str() {
                        "joint" => v.is_joint(),
                        "learner" => !v.learners.is_empty(),
                        other => panic!("unknown state {other}"),
                    }
                })
            });
            c.crash(leader);
            format!(
                "crashed node {leader} ({})",
                if hit {
                    when.as_str()
                } else {
                    "state never reached"
                }
            )
        }
        "membership" => {
            // Runs until the listed nodes that are up agree, then prints
            // their view.
            let nodes: Vec<u64> = tc.take_args("nodes").expect("nodes");
            c.run_until(20_000, |c| {
                let views: Vec<_> = nodes
                    .iter()
                    .filter_map(|n| c.engine(*n))
                    .map(|e| {
                        (
                            e.membership_view(),
                            e.metadata().membership_in_flight().cloned(),
                        )
                    })
                    .collect();
                views
                    .iter()
                    .all(|v| *v == views[0] && v.1.is_none() && !v.0.is_joint())
            });
            let mut out = String::new();
            for n in &nodes {
                let Some(e) = c.engine(*n) else {
                    writeln!(out, "node {n}: down").expect("writing to a String");
                    continue;
                };
                let v = e.membership_view();
                writeln!(
                    out,
                    "node {n}: voters={:?} learners={:?} joint={} in-flight={} registered={:?}",
                    v.voters,
                    v.learners,
                    v.is_joint(),
                    e.metadata()
                        .membership_in_flight()
                        .map_or("none".into(), |c| c.to_string()),
                    e.metadata().nodes().map(|n| n.id).collect::<Vec<_>>()
                )
                .expect("writing to a String");
            }
            if !c.removed.is_empty() {
                writeln!(out, "removed and stopped serving: {:?}", c.removed)
                    .expect("writing to a String");
            }
            out.trim_end().to_string()
        }
        other => panic!("unknown directive {other}"),
    };
    tc.expect_empty().expect("every argument is used");
    out + "\n"
}

/// Sends a membership change to the metadata leader and prints the reply.
fn membership(c: &mut Cluster, change: MembershipChange) -> String {
    let Some(leader) = c.elect(METADATA_GROUP, 10_000) else {
        return "no metadata leader".into();
    };
    // A new leader first commits an entry of its own term.
    c.run_until(2_000, |c| {
        c.engine(leader)
            .and_then(|e| e.group_status(METADATA_GROUP))
            .is_some_and(|s| s.commit >= s.last_index && s.commit > 0)
    });
    let rid = c.command(leader, Command::Membership(change));
    c.run_until(10_000, |c| c.replies.contains_key(&rid));
    match c.replies.get(&rid) {
        Some(Ok(Response::Metadata(r))) => format!("ok {r:?}"),
        Some(Ok(other)) => format!("unexpected {other:?}"),
        Some(Err(e)) => format!("error {}: {e}", e.code()),
        None => "no reply".into(),
    }
}

#[test]
fn scenarios() {
    datadriven::walk("testdata", |f| {
        let mut cluster = None;
        f.run(|tc| run_case(&mut cluster, tc));
    });
}
