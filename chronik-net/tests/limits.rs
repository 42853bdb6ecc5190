//! What one client may hold of a node: connections and calls in flight
//! per client address. Past either, the client gets a clear answer, the
//! node keeps serving, and the refusal is counted.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;

use bytes::Bytes;
use chronik_core::ErrorCode;
use chronik_net::proto::{self, chronik_client::ChronikClient};
use chronik_net::{Client, RetryPolicy};
use std::time::Duration;

fn refusals(node: &chronik_net::NodeHandle, reason: &str) -> u64 {
    node.metrics
        .security_refusals
        .with_label_values(&["client", reason])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_more_than_its_share() {
    let dir = tempdir();
    let mut spec = spec(1, &dir);
    spec.configs[0].client_connections_max = 3;
    spec.configs[0].client_in_flight_max = 1;
    let nodes = start_all(&spec).await;
    let client = spec.client();
    wait_for_nodes(&client, 1).await;
    client.create_topic("t", 1, 1, 1).await.unwrap();
    // The partition has a leader before the burst.
    client
        .produce("t", 0, vec![Bytes::from_static(b"first")])
        .await
        .unwrap();
    let addr = format!("http://{}", spec.configs[0].client_listen);

    // Calls in flight: one at a time from this address. Many produces at
    // once over one connection: those past the first in flight are told
    // BUSY (retriable), the others succeed, nothing else happens.
    let raw = ChronikClient::connect(addr.clone()).await.unwrap();
    let mut calls = Vec::new();
    for i in 0..200 {
        let mut c = raw.clone();
        calls.push(tokio::spawn(async move {
            c.produce(proto::ProduceRequest {
                topic: "t".into(),
                partition: 0,
                records: vec![Bytes::from(format!("r{i}"))],
                timeout_ms: 0,
            })
            .await
            .unwrap()
            .into_inner()
        }));
    }
    let (mut ok, mut busy) = (0, 0);
    for c in calls {
        match c.await.unwrap().error {
            None => ok += 1,
            Some(e) => {
                assert_eq!(e.error_code(), ErrorCode::Busy, "{e:?}");
                assert!(
                    e.retriable && e.message.contains("client_in_flight_max"),
                    "{e:?}"
                );
                busy += 1;
            }
        }
    }
    assert!(ok > 0 && busy > 0, "ok {ok}, busy {busy}");
    assert_eq!(refusals(&nodes[0], "too_many_calls_in_flight"), busy);
    // The slots came back: a call alone goes through, and the Rust client
    // waits out BUSY by itself.
    client
        .produce("t", 0, vec![Bytes::from_static(b"after")])
        .await
        .unwrap();

    // Connections: three per address (`client`'s, `raw` and `second`); a
    // fourth is closed at once and counted, the three keep working.
    let second = ChronikClient::connect(addr.clone()).await.unwrap();
    let third = Client::with_retry(
        vec![spec.configs[0].client_listen.to_string()],
        RetryPolicy {
            deadline: Duration::from_millis(300),
            ..RetryPolicy::default()
        },
    );
    let e = third.metadata().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unreachable, "{e:?}");
    assert!(refusals(&nodes[0], "too_many_connections") >= 1);
    client.metadata().await.unwrap();
    for mut c in [raw, second] {
        c.metadata(proto::MetadataRequest { topics: vec![] })
            .await
            .unwrap();
    }
    for n in nodes {
        n.stop().await.unwrap();
    }
}
