//! TLS on every port, against real `chronik-node run` processes: what a
//! node refuses (plaintext, a certificate from another CA, an expired one,
//! a peer speaking for a node id its certificate does not name, a node id
//! outside the cluster), that each refusal is typed and counted and
//! changes nothing, and that certificates reload on SIGHUP.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use chronik_core::ErrorCode;
use chronik_net::proto::{self, peer_refusal::Reason, raft_client::RaftClient};
use chronik_net::{Client, ClientTls, RetryPolicy};
use common::{wait_ready, Cluster, BIN};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// `chronik-node certs ARGS` (the CA in `dir` is reused).
fn make_certs(dir: &Path, args: &[&str]) {
    let out = Command::new(BIN)
        .args(["certs", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "certs {args:?}: {out:?}");
}

fn client_tls(ca: &Path, identity: Option<(&Path, &Path)>) -> ClientTls {
    ClientTls::from_files(ca, identity.map(|i| i.0), identity.map(|i| i.1)).unwrap()
}

/// A client with a short deadline (refusals must come fast, and a
/// plaintext attempt must not hang).
fn quick_client(c: &Cluster, tls: Option<ClientTls>) -> Client {
    Client::with_retry(
        c.client_addrs.clone(),
        RetryPolicy {
            deadline: Duration::from_secs(2),
            ..RetryPolicy::default()
        },
    )
    .with_tls(tls)
}

/// Opens a peer stream to node `to` presenting `identity` (none: no client
/// certificate), sends one empty batch claiming to come from `from`, and
/// returns the refusal (`Ok(None)`: admitted) or why there was no answer.
async fn peer_stream(
    c: &Cluster,
    to: u64,
    identity: Option<&str>,
    from: u64,
) -> Result<Option<proto::PeerRefusal>, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let certs = c.tls.as_ref().unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(certs.join("ca.pem")).unwrap(),
        ))
        .domain_name(chronik_net::tls::node_server_name(to));
    if let Some(name) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(certs.join(format!("{name}.pem"))).unwrap(),
            std::fs::read(certs.join(format!("{name}.key"))).unwrap(),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{}", c.peer_addrs[to as usize - 1]))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let batch = proto::PeerBatch {
        from,
        incarnation: 1,
        to,
        messages: Vec::new(),
    };
    let ack = RaftClient::new(channel)
        .stream(futures::stream::iter(vec![batch]))
        .await
        .map_err(|s| format!("stream: {s:?}"))?;
    Ok(ack.into_inner().refusal)
}

/// GET over TLS, trusting `ca` (the test speaks HTTP/1.1 itself).
async fn https_get(addr: &str, ca: &Path, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject, pki_types::CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let host = addr.split(':').next().unwrap().to_string();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(host.try_into().unwrap(), tcp)
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body).await; // a close without close_notify is fine here
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of one series on `/metrics` (0 when absent).
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// SIGHUP to the nodes in `ids`.
fn sighup(c: &Cluster, ids: &[u64]) {
    for id in ids {
        let pid = c.children[id].id().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success(), "kill -HUP {pid}");
    }
}

/// Whether every node in `ids` logs `what` within 5 s.
async fn logs_within(c: &Cluster, ids: &[u64], what: &str) -> bool {
    for _ in 0..100 {
        if ids.iter().all(|id| c.log(*id).contains(what)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The cluster still takes writes and reads after the refusals.
async fn still_serving(client: &Client, topic: &str, value: &str) {
    let base = client
        .produce(topic, 0, vec![bytes::Bytes::from(value.to_string())])
        .await
        .unwrap();
    let f = client.fetch(topic, 0, base, 1 << 20).await.unwrap();
    assert_eq!(f.records[0].1, bytes::Bytes::from(value.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_refuses_what_it_must_and_keeps_serving() {
    let mut c = Cluster::with_tls(3, "", "");
    for id in 1..=3 {
        c.start(id);
    }
    let client = c.client();
    wait_ready(&client, 3).await;
    client.create_topic("t", 1, 3, 2).await.unwrap();
    still_serving(&client, "t", "before").await;
    let certs = c.tls.clone().unwrap();
    let ca = certs.join("ca.pem");
    let md_before = client.metadata().await.unwrap();

    // The CLI, over TLS.
    let out = c.cli(&["status"]);
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(BIN)
        .args(["cluster", "status", "--addr", &c.client_addrs[0]])
        .env_remove("CHRONIK_CA")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "plaintext CLI refused: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requires TLS"),
        "{out:?}"
    );

    // Client port: plaintext, another CA, another CA's client
    // certificate, an expired client certificate.
    let e = quick_client(&c, None).metadata().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated, "plaintext: {e:?}");
    assert!(e.to_string().contains("requires TLS"), "{e}");
    let other: PathBuf = c.dir.join("other-ca");
    make_certs(&other, &["--client", "stranger"]);
    let e = quick_client(&c, Some(client_tls(&other.join("ca.pem"), None)))
        .metadata()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated, "wrong CA: {e:?}");
    let stranger = (
        other.join("client-stranger.pem"),
        other.join("client-stranger.key"),
    );
    let e = quick_client(&c, Some(client_tls(&ca, Some((&stranger.0, &stranger.1)))))
        .metadata()
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::Unauthenticated,
        "foreign client cert: {e:?}"
    );
    make_certs(&certs, &["--client", "old", "--valid-days", "-3"]);
    let old = (certs.join("client-old.pem"), certs.join("client-old.key"));
    let e = quick_client(&c, Some(client_tls(&ca, Some((&old.0, &old.1)))))
        .metadata()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated, "expired cert: {e:?}");
    assert!(e.to_string().contains("refused"), "{e}");

    // Peer port: a node's certificate speaking for another node, a
    // client's certificate, a node id outside the cluster, no certificate.
    let r = peer_stream(&c, 1, Some("node-2"), 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.reason(), Reason::IdentityMismatch, "{r:?}");
    assert!(r.message.contains("node-3.chronik"), "{r:?}");
    let r = peer_stream(&c, 1, Some("client-admin"), 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.reason(), Reason::IdentityMismatch, "{r:?}");
    let r = peer_stream(&c, 1, Some("node-5"), 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.reason(), Reason::NotAMember, "{r:?}");
    assert!(
        peer_stream(&c, 1, None, 2).await.is_err(),
        "no client certificate on the peer port"
    );
    // A client certificate cannot ping either.
    let status = {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
            .domain_name(chronik_net::tls::node_server_name(1))
            .identity(Identity::from_pem(
                std::fs::read(certs.join("client-admin.pem")).unwrap(),
                std::fs::read(certs.join("client-admin.key")).unwrap(),
            ));
        let ch = Endpoint::from_shared(format!("https://{}", c.peer_addrs[0]))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        RaftClient::new(ch)
            .ping(proto::PingRequest { from: 2 })
            .await
            .unwrap_err()
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // Nothing changed, everyone else is still served, and the refusals
    // were counted (on /metrics, itself over TLS).
    let md_after = client.metadata().await.unwrap();
    assert_eq!(md_before.nodes, md_after.nodes);
    still_serving(&client, "t", "after").await;
    let metrics = https_get(&c.metrics_addrs[0], &ca, "/metrics").await;
    for (labels, what) in [
        (r#"{port="peer",reason="peer_identity_mismatch"}"#, 2.0),
        (r#"{port="peer",reason="peer_not_a_member"}"#, 2.0),
        (r#"{port="peer",reason="no_client_certificate"}"#, 1.0),
        (r#"{port="client",reason="not_tls"}"#, 1.0),
        (r#"{port="client",reason="certificate_expired"}"#, 1.0),
    ] {
        let v = series(
            &metrics,
            &format!("chronik_security_refusals_total{labels}"),
        );
        assert!(v >= what, "{labels}: {v} (want at least {what})\n{metrics}");
    }
    assert!(c.log(1).contains("peer refused"), "{}", c.log(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup_and_bad_files_are_refused() {
    let mut c = Cluster::with_tls(3, "", "");
    for id in 1..=3 {
        c.start(id);
    }
    let client = c.client();
    wait_ready(&client, 3).await;
    let certs = c.tls.clone().unwrap();
    let node1 = c.client_addrs[0].clone();
    // A fresh client (a new connection) asks node 1 itself.
    let ask_node1 = || async {
        let fresh = c.client();
        fresh
            .ask_node(&node1, |mut a| async move {
                a.node_status(proto::NodeStatusRequest {}).await
            })
            .await
    };

    // A broken certificate file: refused, the old files stay in use.
    std::fs::write(certs.join("node-1.pem"), b"not a certificate").unwrap();
    sighup(&c, &[1]);
    assert!(
        logs_within(&c, &[1], "kept the TLS files in use").await,
        "{}",
        c.log(1)
    );
    ask_node1().await.unwrap();

    // A good new certificate that names only `localhost`: after SIGHUP, new
    // connections to 127.0.0.1 get it and refuse it, which shows it is the
    // one in use; peers, which check the node name, carry on.
    make_certs(&certs, &["--node", "1", "--host", "localhost", "--force"]);
    sighup(&c, &[1]);
    assert!(
        logs_within(&c, &[1], "reloaded the TLS certificate").await,
        "{}",
        c.log(1)
    );
    let e = ask_node1().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated, "{e:?}");
    assert!(e.to_string().contains("not valid for name"), "{e}");
    // Node 1 still speaks to its peers with its new certificate: a
    // partition led anywhere replicates to it.
    client.create_topic("after-reload", 1, 3, 3).await.unwrap();
    client
        .produce("after-reload", 0, vec![bytes::Bytes::from_static(b"x")])
        .await
        .unwrap();
}

#[test]
fn a_node_refuses_to_start_with_a_certificate_that_is_not_its_own_or_expired() {
    let dir = std::env::temp_dir().join(format!("chronik-tls-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    make_certs(&dir, &["--node", "2"]);
    make_certs(&dir, &["--node", "1", "--valid-days", "-1"]);
    let port = common::free_port();
    let config = |cert: &str| {
        let text = format!(
            "node_id = 1\npeer_listen = \"127.0.0.1:{port}\"\nclient_listen = \"127.0.0.1:{}\"\n\
             data_dir = \"{}\"\n[tls]\nca = \"ca.pem\"\ncert = \"{cert}.pem\"\nkey = \"{cert}.key\"\n\
             [[initial_cluster]]\nid = 1\npeer_addr = \"127.0.0.1:{port}\"\nclient_addr = \"127.0.0.1:{}\"\n",
            port + 1,
            dir.join("data").display(),
            port + 1
        );
        let path = dir.join("node.toml");
        std::fs::write(&path, text).unwrap();
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    for (cert, want) in [
        ("node-2", "not valid as node 1's certificate"),
        ("node-1", "expired"),
    ] {
        let out = config(cert);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cert}: {err}");
        assert!(err.contains(want), "{cert}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `chronik-node token ARGS`: (token, principals file entry).
fn make_token(args: &[&str]) -> (String, String) {
    let out = Command::new(BIN).arg("token").args(args).output().unwrap();
    assert!(out.status.success(), "token {args:?}: {out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let token = stderr.lines().last().unwrap().trim().to_string();
    (token, String::from_utf8(out.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_get_their_permissions_and_nothing_more() {
    let dir = std::env::temp_dir().join(format!("chronik-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let principals = dir.join("principals.toml");
    let (writer, writer_entry) = make_token(&["--name", "writer", "--write", "t"]);
    let (reader, reader_entry) = make_token(&["--name", "reader", "--read", "t"]);
    let (viewer, viewer_entry) = make_token(&["--name", "viewer", "--role", "describe"]);
    // The admin client certificate's common name is "admin".
    let admin_entry = "[[principal]]\nname = \"admin\"\nroles = [\"admin\"]\n";
    std::fs::write(
        &principals,
        format!("{admin_entry}{writer_entry}{reader_entry}{viewer_entry}"),
    )
    .unwrap();
    let settings = format!("[auth]\nprincipals_file = \"{}\"", principals.display());
    let mut c = Cluster::with_tls(3, &settings, "");
    for id in 1..=3 {
        c.start(id);
    }
    let admin = c.client();
    wait_ready(&admin, 3).await;
    admin.create_topic("t", 1, 3, 2).await.unwrap();
    admin.create_topic("secret", 1, 3, 2).await.unwrap();
    let ca = c.tls.clone().unwrap().join("ca.pem");
    let with_token = |token: Option<&str>| {
        quick_client(&c, Some(client_tls(&ca, None)))
            .with_token(token)
            .unwrap()
    };
    let (writer_c, reader_c, viewer_c) = (
        with_token(Some(&writer)),
        with_token(Some(&reader)),
        with_token(Some(&viewer)),
    );

    // No credentials, or a token nobody has: UNAUTHENTICATED.
    for (who, client) in [
        ("nobody", with_token(None)),
        ("unknown token", with_token(Some("chronik_not-a-token"))),
    ] {
        let e = client.metadata().await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unauthenticated, "{who}: {e:?}");
    }

    // The writer produces to t and sees only t.
    let base = writer_c
        .produce("t", 0, vec![bytes::Bytes::from_static(b"w")])
        .await
        .unwrap();
    let md = writer_c.metadata().await.unwrap();
    let names: Vec<&str> = md.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["t"]);
    let e = writer_c
        .produce("secret", 0, vec![bytes::Bytes::from_static(b"x")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e:?}");
    assert!(e.to_string().contains("write on topic \"secret\""), "{e}");
    let e = writer_c.fetch("t", 0, 0, 1 << 20).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e:?}");

    // The reader reads t but may not produce to it: nothing is appended.
    let f = reader_c.fetch("t", 0, 0, 1 << 20).await.unwrap();
    assert_eq!(f.records, vec![(base, bytes::Bytes::from_static(b"w"))]);
    let e = reader_c
        .produce("t", 0, vec![bytes::Bytes::from_static(b"r")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e:?}");
    assert!(
        e.to_string()
            .contains("reader lacks the write on topic \"t\""),
        "{e}"
    );
    let f = admin.fetch("t", 0, 0, 1 << 20).await.unwrap();
    assert_eq!(
        f.high_watermark,
        base + 1,
        "the refused produce appended nothing"
    );

    // Non-admins cannot change the cluster: the viewer describes it but
    // cannot remove a node or delete a topic; the CLI says why.
    let md = viewer_c.metadata().await.unwrap();
    assert_eq!(md.topics.len(), 2);
    for e in [
        viewer_c.remove_node(3).await.unwrap_err(),
        viewer_c.delete_topic("t").await.unwrap_err(),
        writer_c.create_topic("new", 1, 3, 2).await.unwrap_err(),
    ] {
        assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e:?}");
        assert!(e.to_string().contains("admin"), "{e}");
    }
    let out = Command::new(BIN)
        .args([
            "cluster",
            "remove-node",
            "--id",
            "3",
            "--addr",
            &c.client_addrs[0],
        ])
        .args(["--ca", &ca.display().to_string()])
        .env("CHRONIK_TOKEN", &viewer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PERMISSION_DENIED"), "{stderr}");
    let out = Command::new(BIN)
        .args(["cluster", "list-nodes", "--addr", &c.client_addrs[0]])
        .args(["--ca", &ca.display().to_string()])
        .env("CHRONIK_TOKEN", &viewer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        admin.metadata().await.unwrap().nodes.len(),
        3,
        "nobody was removed"
    );
    assert!(admin.metadata().await.unwrap().topics.len() == 2);

    // A new principal reloads with SIGHUP; a broken file is refused and
    // the principals in use are kept.
    let (late, late_entry) = make_token(&["--name", "late", "--role", "describe"]);
    let late_c = with_token(Some(&late));
    assert_eq!(
        late_c.metadata().await.unwrap_err().code(),
        ErrorCode::Unauthenticated
    );
    let good = std::fs::read_to_string(&principals).unwrap();
    std::fs::write(&principals, "[[principal]]\nname = ").unwrap();
    sighup(&c, &[1, 2, 3]);
    assert!(
        logs_within(&c, &[1, 2, 3], "kept the principals in use").await,
        "{}",
        c.log(1)
    );
    reader_c.fetch("t", 0, 0, 1 << 20).await.unwrap();
    std::fs::write(&principals, format!("{good}{late_entry}")).unwrap();
    sighup(&c, &[1, 2, 3]);
    assert!(
        logs_within(
            &c,
            &[1, 2, 3],
            "reloaded the principals file (5 principals)"
        )
        .await,
        "{}",
        c.log(1)
    );
    assert_eq!(late_c.metadata().await.unwrap().topics.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_requires_client_certificates_refuses_calls_without_one() {
    let mut c = Cluster::with_tls_settings(3, "require_client_cert = true");
    for id in 1..=3 {
        c.start(id);
    }
    let client = c.client(); // with the admin client certificate
    wait_ready(&client, 3).await;
    let ca = c.tls.clone().unwrap().join("ca.pem");
    let e = quick_client(&c, Some(client_tls(&ca, None)))
        .metadata()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated, "{e:?}");
    assert!(
        e.to_string().contains("requires a client certificate"),
        "{e}"
    );
    // The nodes, whose certificates identify them, still work together.
    client.create_topic("t", 1, 3, 3).await.unwrap();
    still_serving(&client, "t", "with certificate").await;
}
