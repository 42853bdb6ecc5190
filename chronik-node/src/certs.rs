//! `chronik-node certs`: a local CA, node certificates and client
//! certificates, for `dev --tls`, tests and small deployments. A larger
//! deployment uses its own PKI: what a node needs of a certificate is in
//! docs/security.md.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// What to create.
#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory for the files: `ca.pem` and `ca.key` (created when
    /// absent, reused otherwise), `node-<id>.pem`/`.key`,
    /// `client-<name>.pem`/`.key`.
    #[arg(long)]
    pub dir: PathBuf,
    /// A node certificate for this node id (repeatable).
    #[arg(long = "node")]
    pub nodes: Vec<u64>,
    /// A host name or IP address clients use to reach the nodes, added to
    /// every node certificate (repeatable; default 127.0.0.1 and
    /// localhost).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// A client certificate whose subject common name is this principal
    /// (repeatable).
    #[arg(long = "client")]
    pub clients: Vec<String>,
    /// Days the new certificates stay valid (a negative number makes
    /// certificates that have already expired, for tests).
    #[arg(long, default_value_t = 365, allow_negative_numbers = true)]
    pub valid_days: i64,
    /// Replace node and client files that exist (the CA is always kept).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Generate(String),
    #[error("{0} exists (pass --force to replace it)")]
    Exists(String),
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
}

fn gen(e: rcgen::Error) -> CertsError {
    CertsError::Generate(e.to_string())
}

/// The CA's subject: fixed, so a CA created here can sign again later
/// from its key alone.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Chronik CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// Files written, for the caller to print.
#[derive(Debug, Default)]
pub struct Created {
    pub ca: PathBuf,
    pub ca_created: bool,
    pub files: Vec<PathBuf>,
}

pub fn create(a: &CertsArgs) -> Result<Created, CertsError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CertsError::Io { path, source }
    };
    std::fs::create_dir_all(&a.dir).map_err(io(&a.dir))?;
    for c in &a.clients {
        let valid = !c.is_empty()
            && c.len() <= 64
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.@".contains(ch));
        if !valid {
            return Err(CertsError::Invalid {
                what: "client name",
                value: c.clone(),
                reason: "use 1 to 64 letters, digits and - _ . @".into(),
            });
        }
    }
    let (ca_pem, ca_key) = (a.dir.join("ca.pem"), a.dir.join("ca.key"));
    let now = time::OffsetDateTime::now_utc();
    let mut out = Created {
        ca: ca_pem.clone(),
        ..Created::default()
    };
    let ca_signing_key = if ca_key.exists() {
        let pem = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
        KeyPair::from_pem(&pem).map_err(|e| CertsError::Invalid {
            what: "CA key",
            value: ca_key.display().to_string(),
            reason: e.to_string(),
        })?
    } else {
        let key = KeyPair::generate().map_err(gen)?;
        let mut params = ca_params();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(10 * 365);
        let cert = params.self_signed(&key).map_err(gen)?;
        write(&ca_key, &key.serialize_pem(), true)?;
        write(&ca_pem, &cert.pem(), false)?;
        out.ca_created = true;
        key
    };
    let issuer = Issuer::new(ca_params(), ca_signing_key);
    let hosts = if a.hosts.is_empty() {
        vec!["127.0.0.1".to_string(), "localhost".to_string()]
    } else {
        a.hosts.clone()
    };
    let leaf =
        |cn: &str, sans: Vec<String>, server: bool| -> Result<(String, String), CertsError> {
            let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
            for s in sans {
                p.subject_alt_names
                    .push(match s.parse::<std::net::IpAddr>() {
                        Ok(ip) => SanType::IpAddress(ip),
                        Err(_) => {
                            SanType::DnsName(s.clone().try_into().map_err(|e: rcgen::Error| {
                                CertsError::Invalid {
                                    what: "host",
                                    value: s.clone(),
                                    reason: e.to_string(),
                                }
                            })?)
                        }
                    });
            }
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            p.distinguished_name = dn;
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            if server {
                p.extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ServerAuth);
            }
            p.not_before = now - time::Duration::days(2);
            p.not_after = now + time::Duration::days(a.valid_days);
            if p.not_after <= p.not_before {
                p.not_before = p.not_after - time::Duration::days(1);
            }
            let key = KeyPair::generate().map_err(gen)?;
            let cert = p.signed_by(&key, &issuer).map_err(gen)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
    let mut made = Vec::new();
    for id in &a.nodes {
        let mut sans = vec![chronik_net::tls::node_server_name(*id)];
        sans.extend(hosts.iter().cloned());
        made.push((
            format!("node-{id}"),
            leaf(&format!("node {id}"), sans, true)?,
        ));
    }
    for c in &a.clients {
        made.push((format!("client-{c}"), leaf(c, Vec::new(), false)?));
    }
    for (name, _) in &made {
        for ext in ["pem", "key"] {
            let path = a.dir.join(format!("{name}.{ext}"));
            if path.exists() && !a.force {
                return Err(CertsError::Exists(path.display().to_string()));
            }
        }
    }
    for (name, (cert, key)) in made {
        let (c, k) = (
            a.dir.join(format!("{name}.pem")),
            a.dir.join(format!("{name}.key")),
        );
        write(&k, &key, true)?;
        write(&c, &cert, false)?;
        out.files.extend([c, k]);
    }
    Ok(out)
}

/// Writes a file whole; keys are readable by their owner only.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertsError> {
    let err = |source| CertsError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let _ = secret;
    let mut f = o.open(path).map_err(err)?;
    use std::io::Write;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}
