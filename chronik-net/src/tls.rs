//! TLS on every port (`[tls]` in a node's config).
//!
//! One CA bundle, one certificate and one key per node. The certificate
//! serves three ports and also identifies the node when it connects out:
//! - the peer port requires a client certificate (mutual TLS), and a peer
//!   must present one that names the node id it speaks for
//!   ([`node_server_name`]: `node-<id>.chronik` as a DNS subjectAltName);
//! - the client port takes a certificate when one is presented (required
//!   with `require_client_cert`), and works without one otherwise;
//! - `/metrics` is served over TLS, client certificates optional.
//!
//! The files are read again on [`TlsState::reload`] (SIGHUP for the
//! daemon): new connections use the new files, open ones keep theirs, and
//! files that do not load or do not check out are refused with the old
//! ones kept. Simulation builds carry the settings and ignore them (madsim
//! has no TLS): the simulator runs plaintext.

use chronik_core::NodeId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[tls]`: where the PEM files are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA certificate(s) that sign every node's certificate and every
    /// client certificate this node accepts.
    pub ca: PathBuf,
    /// This node's certificate (chain, leaf first). It must name
    /// `node-<node_id>.chronik` and may name the hosts and IPs clients
    /// connect to.
    pub cert: PathBuf,
    /// The certificate's private key.
    pub key: PathBuf,
    /// Refuse client-port connections without a client certificate
    /// (otherwise a client may connect without one).
    #[serde(default)]
    pub require_client_cert: bool,
}

/// The DNS name a node's certificate must carry: how a peer's certificate
/// names the node id it speaks for, and the name a node checks when it
/// connects to a peer it knows by id.
pub fn node_server_name(id: NodeId) -> String {
    format!("node-{id}.chronik")
}

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} {path} is not usable: {reason}")]
    Invalid {
        what: &'static str,
        path: String,
        reason: String,
    },
}

/// PEM files read from disk, as a connecting side needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates that the server's certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// A client certificate and its key (PEM), for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// Reads and checks the files: the CA holds at least one certificate,
    /// and the key belongs to the certificate. `cert` and `key` go
    /// together.
    pub fn from_files(
        ca: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<ClientTls, TlsError> {
        let ca_pem = read("CA file", ca)?;
        #[cfg(not(madsim))]
        imp::parse_certs("CA file", ca, &ca_pem)?;
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let pem = (read("certificate", c)?, read("key", k)?);
                #[cfg(not(madsim))]
                imp::certified_key((c, &pem.0), (k, &pem.1))?;
                Some(pem)
            }
            (Some(c), None) | (None, Some(c)) => {
                return Err(TlsError::Invalid {
                    what: "client identity",
                    path: c.display().to_string(),
                    reason: "a client certificate needs its key, and a key its certificate".into(),
                })
            }
        };
        Ok(ClientTls { ca_pem, identity })
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// An error with its causes: tonic's transport errors say only
/// "transport error" at the top, the reason (refused, a certificate the
/// CA did not sign...) is underneath.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// The TLS refusal behind a failed connection or call, if that is what
/// failed: a certificate that does not check out, on either side. Not
/// worth retrying, unlike a node that is down.
pub(crate) fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    #[cfg(not(madsim))]
    {
        let mut next = Some(e);
        while let Some(e) = next {
            let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
                e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(t) = tls {
                return Some(t.to_string());
            }
            // An alert the server sent after the handshake (TLS 1.3 checks
            // the client's certificate then) reaches us as text only.
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                let text = io.to_string();
                if io.kind() == std::io::ErrorKind::InvalidData
                    && text.starts_with("received fatal alert")
                {
                    return Some(format!(
                        "the node refused this client's certificate ({text})"
                    ));
                }
            }
            next = e.source();
        }
    }
    let _ = e;
    None
}

/// A gRPC endpoint for `addr` (`host:port`): `https` with `tls` (checking
/// the server's certificate against `server_name`, or the address's host
/// when `None`), plain `http` without.
pub(crate) fn endpoint(
    addr: &str,
    tls: Option<&ClientTls>,
    server_name: Option<&str>,
) -> Result<tonic::transport::Endpoint, String> {
    #[cfg(not(madsim))]
    if let Some(tls) = tls {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = server_name {
            config = config.domain_name(name);
        }
        return tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .and_then(|e| e.tls_config(config))
            .map_err(|e| format!("{addr}: {e}"));
    }
    let _ = (tls, server_name);
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("{addr}: {e}"))
}

/// How this node connects out: with its certificate when TLS is on.
#[derive(Clone, Default)]
pub(crate) struct Dialer {
    #[cfg(not(madsim))]
    pub state: Option<std::sync::Arc<TlsState>>,
    /// `[auth] node_token`: sent to other nodes' client ports.
    pub token: Option<String>,
}

impl Dialer {
    /// What a connection to another node's client port presents.
    pub fn client_tls(&self) -> Option<ClientTls> {
        #[cfg(not(madsim))]
        return self.state.as_ref().map(|s| s.current().outgoing.clone());
        #[cfg(madsim)]
        None
    }

    /// A client of other nodes' client ports, as this node.
    pub fn client(&self, addrs: Vec<String>, retry: crate::RetryPolicy) -> crate::Client {
        crate::Client::with_retry(addrs, retry)
            .with_tls(self.client_tls())
            .with_token(self.token.as_deref())
            .expect("node_token is printable ASCII (NodeConfig::validate)")
    }

    /// An endpoint for node `id`'s peer port at `addr`: its certificate
    /// must name `id`, whatever the address.
    pub fn peer(&self, addr: &str, id: NodeId) -> Result<tonic::transport::Endpoint, String> {
        endpoint(
            addr,
            self.client_tls().as_ref(),
            Some(&node_server_name(id)),
        )
    }
}

#[cfg(not(madsim))]
pub(crate) use imp::handshake;
#[cfg(not(madsim))]
pub use imp::{cert_names_node, TlsState};

#[cfg(not(madsim))]
mod imp {
    use super::{node_server_name, read, ClientTls, TlsConfig, TlsError};
    use chronik_core::NodeId;
    use parking_lot::RwLock;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::server::danger::ClientCertVerifier;
    use rustls::server::WebPkiClientVerifier;
    use rustls::sign::CertifiedKey;
    use rustls::{RootCertStore, ServerConfig};
    use std::path::Path;
    use std::sync::Arc;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn invalid(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
        TlsError::Invalid {
            what,
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    pub(super) fn parse_certs(
        what: &'static str,
        path: &Path,
        pem: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(what, path, e))?;
        if certs.is_empty() {
            return Err(invalid(what, path, "no PEM certificate in it"));
        }
        Ok(certs)
    }

    /// The certificate chain with its key, checked to belong together.
    pub(super) fn certified_key(
        (cert_path, cert_pem): (&Path, &[u8]),
        (key_path, key_pem): (&Path, &[u8]),
    ) -> Result<CertifiedKey, TlsError> {
        let chain = parse_certs("certificate", cert_path, cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| invalid("key", key_path, format!("no PEM private key in it ({e})")))?;
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
            invalid(
                "key",
                key_path,
                format!(
                    "does not match the certificate {} ({e})",
                    cert_path.display()
                ),
            )
        })
    }

    /// Whether the certificate a peer presented names node `id`.
    pub fn cert_names_node(cert: &CertificateDer<'_>, id: NodeId) -> bool {
        let Ok(name) = ServerName::try_from(node_server_name(id)) else {
            return false;
        };
        webpki::EndEntityCert::try_from(cert)
            .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
    }

    /// The client port's handshake verifier: it checks that the client
    /// holds the key of the certificate it presents, and leaves the
    /// certificate itself to each call ([`Loaded::check_client_cert`]). A
    /// TLS 1.3 client sends its first request before the server has checked
    /// its certificate, so a refusal in the handshake reaches it as a
    /// closed connection at best; a refusal in the call's answer says why.
    #[derive(Debug)]
    struct CheckedPerCall(Arc<dyn ClientCertVerifier>);

    impl ClientCertVerifier for CheckedPerCall {
        fn offer_client_auth(&self) -> bool {
            true
        }

        fn client_auth_mandatory(&self) -> bool {
            false
        }

        fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
            self.0.root_hint_subjects()
        }

        fn verify_client_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _now: UnixTime,
        ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
            Ok(rustls::server::danger::ClientCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    /// Everything built from one reading of the files.
    pub struct Loaded {
        /// Peer port: a client certificate is required.
        pub peer: Arc<ServerConfig>,
        /// Client port: a client certificate is taken if presented, and
        /// checked by each call.
        pub client: Arc<ServerConfig>,
        /// Checks client certificates against the CA.
        client_certs: Arc<dyn ClientCertVerifier>,
        /// Calls on the client port need a client certificate.
        pub require_client_cert: bool,
        /// `/metrics`: HTTP/1.1, client certificates optional.
        pub metrics: Arc<ServerConfig>,
        /// This node connecting out (to peers, to other nodes' client
        /// ports), its certificate as its identity.
        pub outgoing: ClientTls,
    }

    impl Loaded {
        /// Whether a client's certificate chain (leaf first) is signed by
        /// the CA, valid now and meant for clients; why not if not.
        pub fn check_client_cert(&self, chain: &[CertificateDer<'_>]) -> Result<(), String> {
            let Some((leaf, intermediates)) = chain.split_first() else {
                return Err("no certificate".into());
            };
            self.client_certs
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }

    /// The node's TLS settings, reloadable.
    pub struct TlsState {
        config: TlsConfig,
        node_id: NodeId,
        current: RwLock<Arc<Loaded>>,
    }

    impl TlsState {
        /// Reads and checks the files: the key matches the certificate, and
        /// the certificate chains to the CA, is valid now, names this node
        /// and may serve as both a server and a client certificate.
        pub fn load(config: &TlsConfig, node_id: NodeId) -> Result<TlsState, TlsError> {
            Ok(TlsState {
                current: RwLock::new(Arc::new(build(config, node_id)?)),
                config: config.clone(),
                node_id,
            })
        }

        /// Reads the files again; on any problem keeps what it had.
        pub fn reload(&self) -> Result<(), TlsError> {
            let fresh = build(&self.config, self.node_id)?;
            *self.current.write() = Arc::new(fresh);
            Ok(())
        }

        pub fn current(&self) -> Arc<Loaded> {
            self.current.read().clone()
        }
    }

    fn build(config: &TlsConfig, node_id: NodeId) -> Result<Loaded, TlsError> {
        let ca_pem = read("CA file", &config.ca)?;
        let cert_pem = read("certificate", &config.cert)?;
        let key_pem = read("key", &config.key)?;
        let mut roots = RootCertStore::empty();
        for c in parse_certs("CA file", &config.ca, &ca_pem)? {
            roots
                .add(c)
                .map_err(|e| invalid("CA file", &config.ca, e))?;
        }
        let roots = Arc::new(roots);
        let key = certified_key((&config.cert, &cert_pem), (&config.key, &key_pem))?;
        let cert_err = |e: rustls::Error| {
            invalid(
                "certificate",
                &config.cert,
                format!(
                    "not valid as node {node_id}'s certificate under the CA {}: {e}",
                    config.ca.display()
                ),
            )
        };
        let leaf = key.end_entity_cert().map_err(cert_err)?.clone();
        let intermediates = &key.cert[1..];
        let name = ServerName::try_from(node_server_name(node_id))
            .map_err(|e| invalid("certificate", &config.cert, e))?;
        let now = UnixTime::now();
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| invalid("CA file", &config.ca, e))?
            .verify_server_cert(&leaf, intermediates, &name, &[], now)
            .map_err(cert_err)?;
        let required = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| invalid("CA file", &config.ca, e))?;
        required
            .verify_client_cert(&leaf, intermediates, now)
            .map_err(cert_err)?;
        let optional = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid("CA file", &config.ca, e))?;
        let server = |verifier: Arc<dyn ClientCertVerifier>, alpn: &[u8]| {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid("certificate", &config.cert, e))?
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key.clone())));
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok::<_, TlsError>(Arc::new(c))
        };
        Ok(Loaded {
            peer: server(required.clone(), b"h2")?,
            client: server(Arc::new(CheckedPerCall(required.clone())), b"h2")?,
            client_certs: required,
            require_client_cert: config.require_client_cert,
            metrics: server(optional, b"http/1.1")?,
            outgoing: ClientTls {
                ca_pem,
                identity: Some((cert_pem, key_pem)),
            },
        })
    }

    /// How long a connection may take over its handshake.
    const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    /// The server side of a TLS handshake on `port`, with the files
    /// current now; a refusal comes with its metric label.
    pub(crate) async fn handshake(
        state: &TlsState,
        port: crate::listen::Port,
        tcp: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, (&'static str, String)>
    {
        use crate::listen::Port;
        let config = match port {
            Port::Peer => state.current().peer.clone(),
            Port::Client => state.current().client.clone(),
            Port::Metrics => state.current().metrics.clone(),
        };
        let accepting = tokio_rustls::TlsAcceptor::from(config)
            .accept(tcp)
            .into_fallible();
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, accepting).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err((e, tcp))) => {
                tokio::spawn(linger(tcp));
                Err((handshake_refusal(&e), format!("TLS handshake refused: {e}")))
            }
            Err(_) => Err(("handshake_timeout", "TLS handshake timed out".into())),
        }
    }

    /// How long a refused connection stays open for its client to read why.
    const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

    /// Closes a refused connection so that its client reads the alert that
    /// says why. TLS 1.3 clients send their first request before the
    /// server has checked their certificate: closed with that request
    /// unread, the connection would be reset, and the client would see a
    /// broken pipe instead of the refusal.
    async fn linger(mut tcp: tokio::net::TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = tcp.shutdown().await;
        let mut buf = [0u8; 4096];
        let drain = async { while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// A failed handshake's reason, as the refusal metric labels it.
    fn handshake_refusal(e: &std::io::Error) -> &'static str {
        use rustls::Error as E;
        match e.get_ref().and_then(|e| e.downcast_ref::<E>()) {
            Some(E::InvalidMessage(_)) => "not_tls",
            Some(E::NoCertificatesPresented) => "no_client_certificate",
            Some(E::InvalidCertificate(rustls::CertificateError::Expired))
            | Some(E::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })) => {
                "certificate_expired"
            }
            Some(E::InvalidCertificate(_)) => "certificate_refused",
            Some(_) => "handshake_failed",
            None => "connection_lost",
        }
    }
}
