//! Who is calling the client port, and what they may do (`[auth]` in a
//! node's config).
//!
//! A caller is identified by a bearer token (`authorization: Bearer ...`,
//! looked up by its SHA-256: the principals file holds hashes, never
//! tokens) or, with TLS, by its client certificate: one that names a node
//! (`node-<id>.chronik`) is that node, any other is the principal named by
//! its subject common name. Without `[auth]` every caller may do anything.
//!
//! Permissions: `admin` (everything: topics, membership, rebalancing,
//! maintenance), `describe` (metadata, status and listings of the whole
//! cluster), and per topic `write` (produce) and `read` (fetch); writing or
//! reading a topic also shows it in metadata. Nodes may do anything (a
//! joining node adds itself). The principals file reloads with the TLS
//! files (SIGHUP).

use chronik_core::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[auth]`: authentication and authorization on the client port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The principals file (TOML, see docs/security.md).
    pub principals_file: PathBuf,
    /// The bearer token this node presents when it calls other nodes'
    /// client ports (joining, looking up a peer's address): needed without
    /// TLS, where no certificate says it is a node. A secret: keep the
    /// config file as private as a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_token: Option<String>,
}

/// A principals file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the principals file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("principals file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission<'a> {
    Admin,
    Describe,
    Write(&'a str),
    Read(&'a str),
}

impl std::fmt::Display for Permission<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Permission::Admin => f.write_str("admin"),
            Permission::Describe => f.write_str("describe"),
            Permission::Write(t) => write!(f, "write on topic {t:?}"),
            Permission::Read(t) => write!(f, "read on topic {t:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Describe,
}

/// One `[[principal]]` of the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalEntry {
    /// Also the common name of the principal's client certificate.
    pub name: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Topics it may produce to (`"*"`: every topic).
    #[serde(default)]
    pub write: Vec<String>,
    /// Topics it may fetch from (`"*"`: every topic).
    #[serde(default)]
    pub read: Vec<String>,
    /// SHA-256 (hex) of each bearer token that authenticates it: several
    /// while a token is rotated.
    #[serde(default)]
    pub tokens: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalsFile {
    #[serde(default)]
    principal: Vec<PrincipalEntry>,
}

/// Longest principal name, token and topic list this file takes.
const NAME_LEN_MAX: usize = 128;
const PRINCIPALS_MAX: usize = 10_000;

/// The principals, by name and by token hash. (Ordered maps: a `HashMap`
/// seeds itself from the OS, which in simulation draws from the seed's
/// random stream and shifts every run.)
#[derive(Debug, Default)]
pub struct Principals {
    by_name: BTreeMap<String, Arc<PrincipalEntry>>,
    by_token: BTreeMap<[u8; 32], Arc<PrincipalEntry>>,
}

impl Principals {
    /// Parses and checks a principals file's text (`source` names it in
    /// errors): names unique and well formed, tokens 64 hex digits and
    /// unique, topic names valid.
    pub fn parse(text: &str, source: &str) -> Result<Principals, AuthError> {
        let invalid = |reason: String| AuthError::Invalid {
            path: source.to_string(),
            reason,
        };
        let file: PrincipalsFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.principal.len() > PRINCIPALS_MAX {
            return Err(invalid(format!(
                "{} principals (at most {PRINCIPALS_MAX})",
                file.principal.len()
            )));
        }
        let mut out = Principals::default();
        for p in file.principal {
            validate_principal_name(&p.name)
                .map_err(|r| invalid(format!("name {:?}: {r}", p.name)))?;
            for t in p.write.iter().chain(&p.read) {
                if t != "*" {
                    chronik_core::metadata::validate_topic_name(t).map_err(|e| {
                        invalid(format!("principal {:?}: topic {t:?}: {e}", p.name))
                    })?;
                }
            }
            let p = Arc::new(p);
            for t in &p.tokens {
                let hash = parse_hash(t).ok_or_else(|| {
                    invalid(format!(
                        "principal {:?}: token hash {t:?} is not 64 hex digits (the SHA-256 of the token, as `chronik-node token` prints it)",
                        p.name
                    ))
                })?;
                if out.by_token.insert(hash, p.clone()).is_some() {
                    return Err(invalid(format!(
                        "principal {:?}: a token hash appears twice",
                        p.name
                    )));
                }
            }
            if out.by_name.insert(p.name.clone(), p.clone()).is_some() {
                return Err(invalid(format!("principal {:?} appears twice", p.name)));
            }
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    fn by_token(&self, token: &str) -> Option<Arc<PrincipalEntry>> {
        self.by_token.get(&token_hash(token)).cloned()
    }

    fn by_name(&self, name: &str) -> Option<Arc<PrincipalEntry>> {
        self.by_name.get(name).cloned()
    }
}

/// A principal name: also a certificate's common name.
pub fn validate_principal_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err(format!("must be 1 to {NAME_LEN_MAX} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err("use letters, digits and - _ . @".into());
    }
    Ok(())
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of a token: what the principals file stores.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random bearer token and the hash the principals file takes.
pub fn new_token() -> Result<(String, String), String> {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    let token = format!("chronik_{}", hex(&raw));
    let hash = hex(&token_hash(&token));
    Ok((token, hash))
}

/// Who made a call.
#[derive(Clone, Debug)]
pub enum Caller {
    /// Authentication is off: anyone may do anything.
    Anyone,
    /// A node of the cluster (its certificate names it).
    Node(NodeId),
    Principal(Arc<PrincipalEntry>),
}

impl Caller {
    pub fn allows(&self, need: Permission<'_>) -> bool {
        let p = match self {
            Caller::Anyone | Caller::Node(_) => return true,
            Caller::Principal(p) => p,
        };
        if p.roles.contains(&Role::Admin) {
            return true;
        }
        let on = |topics: &[String], t: &str| topics.iter().any(|x| x == "*" || x == t);
        match need {
            Permission::Admin => false,
            Permission::Describe => p.roles.contains(&Role::Describe),
            // Planted bug (simulation builds only): a principal without any
            // write permission may write everywhere.
            Permission::Write(t) => {
                on(&p.write, t)
                    || (p.write.is_empty()
                        && chronik_core::planted::active(
                            chronik_core::planted::Bug::AuthIgnoresTopicWrite,
                        ))
            }
            Permission::Read(t) => on(&p.read, t),
        }
    }

    /// Whether metadata shows this topic to the caller.
    pub fn sees_topic(&self, topic: &str) -> bool {
        self.allows(Permission::Describe)
            || self.allows(Permission::Write(topic))
            || self.allows(Permission::Read(topic))
    }

    pub fn name(&self) -> String {
        match self {
            Caller::Anyone => "anyone".into(),
            Caller::Node(id) => format!("node {id}"),
            Caller::Principal(p) => p.name.clone(),
        }
    }
}

/// Why a call was refused: `UNAUTHENTICATED` (no identity) or
/// `PERMISSION_DENIED` (an identity without the permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unauthenticated(String),
    PermissionDenied(String),
}

/// The loaded principals, reloadable.
pub struct AuthState {
    path: PathBuf,
    current: parking_lot::RwLock<Arc<Principals>>,
}

impl AuthState {
    pub fn load(config: &AuthConfig) -> Result<AuthState, AuthError> {
        Ok(AuthState {
            current: parking_lot::RwLock::new(Arc::new(read(&config.principals_file)?)),
            path: config.principals_file.clone(),
        })
    }

    /// Reads the file again; on any problem keeps what it had. Returns
    /// the number of principals loaded.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let fresh = read(&self.path)?;
        let n = fresh.len();
        *self.current.write() = Arc::new(fresh);
        Ok(n)
    }

    pub fn current(&self) -> Arc<Principals> {
        self.current.read().clone()
    }
}

fn read(path: &Path) -> Result<Principals, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Principals::parse(&text, &path.display().to_string())
}

/// What a request carries to identify its caller.
#[derive(Debug, Default)]
pub struct Credentials<'a> {
    /// The `authorization` header's value.
    pub authorization: Option<&'a str>,
    /// The common name of the client certificate, if one was presented.
    pub cert_name: Option<CertName>,
}

/// Who a client certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertName {
    Node(NodeId),
    Principal(String),
    /// A certificate with no common name and no node name.
    Nameless,
}

/// Identifies the caller: a bearer token first, then the certificate.
pub fn identify(principals: &Principals, c: &Credentials<'_>) -> Result<Caller, Refusal> {
    if let Some(value) = c.authorization {
        let token = value.strip_prefix("Bearer ").ok_or_else(|| {
            Refusal::Unauthenticated("the authorization header must be `Bearer <token>`".into())
        })?;
        // Never log or echo the token.
        return principals
            .by_token(token.trim())
            .map(Caller::Principal)
            .ok_or_else(|| Refusal::Unauthenticated("unknown bearer token".into()));
    }
    match &c.cert_name {
        Some(CertName::Node(id)) => Ok(Caller::Node(*id)),
        Some(CertName::Principal(name)) => principals
            .by_name(name)
            .map(Caller::Principal)
            .ok_or_else(|| {
                Refusal::Unauthenticated(format!(
                    "the client certificate names {name:?}, which is not a principal of this cluster"
                ))
            }),
        Some(CertName::Nameless) => Err(Refusal::Unauthenticated(
            "the client certificate has no common name".into(),
        )),
        None => Err(Refusal::Unauthenticated(
            "no credentials: present a bearer token or a client certificate".into(),
        )),
    }
}

/// The refusal for a caller lacking `need`.
pub fn deny(caller: &Caller, need: Permission<'_>) -> Refusal {
    Refusal::PermissionDenied(format!("{} lacks the {need} permission", caller.name()))
}

/// Reads who a client certificate names: a node (`node-<id>.chronik` as a
/// DNS subjectAltName) or the principal its subject common name gives.
#[cfg(not(madsim))]
pub fn cert_name(der: &[u8]) -> CertName {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return CertName::Nameless;
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                if let Some(id) = dns
                    .strip_prefix("node-")
                    .and_then(|rest| rest.strip_suffix(".chronik"))
                    .and_then(|id| id.parse::<NodeId>().ok())
                {
                    return CertName::Node(id);
                }
            }
        }
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    cn.map_or(CertName::Nameless, CertName::Principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principals() -> Principals {
        let (_, admin_hash) = ("t-admin", hex(&token_hash("t-admin")));
        let app_hash = hex(&token_hash("t-app"));
        let text = format!(
            r#"
[[principal]]
name = "ops"
roles = ["admin"]
tokens = ["{admin_hash}"]

[[principal]]
name = "orders-app"
write = ["orders"]
read = ["orders", "payments"]
tokens = ["{app_hash}"]

[[principal]]
name = "viewer"
roles = ["describe"]
"#
        );
        Principals::parse(&text, "test").unwrap()
    }

    fn who(p: &Principals, token: Option<&str>, cert: Option<CertName>) -> Result<Caller, Refusal> {
        let header = token.map(|t| format!("Bearer {t}"));
        identify(
            p,
            &Credentials {
                authorization: header.as_deref(),
                cert_name: cert,
            },
        )
    }

    #[test]
    fn callers_get_exactly_their_permissions() {
        let p = principals();
        let admin = who(&p, Some("t-admin"), None).unwrap();
        let app = who(&p, Some("t-app"), None).unwrap();
        let viewer = who(&p, None, Some(CertName::Principal("viewer".into()))).unwrap();
        let node = who(&p, None, Some(CertName::Node(3))).unwrap();
        let table = [
            (Permission::Admin, [true, false, false, true]),
            (Permission::Describe, [true, false, true, true]),
            (Permission::Write("orders"), [true, true, false, true]),
            (Permission::Write("payments"), [true, false, false, true]),
            (Permission::Read("payments"), [true, true, false, true]),
            (Permission::Read("other"), [true, false, false, true]),
        ];
        for (need, want) in table {
            let got = [&admin, &app, &viewer, &node].map(|c| c.allows(need));
            assert_eq!(got, want, "{need}");
        }
        assert!(app.sees_topic("payments") && !app.sees_topic("other"));
        assert!(viewer.sees_topic("other"));
        assert_eq!(
            deny(&app, Permission::Admin),
            Refusal::PermissionDenied("orders-app lacks the admin permission".into())
        );
    }

    #[test]
    fn unknown_or_missing_credentials_are_unauthenticated() {
        let p = principals();
        for (token, cert) in [
            (Some("nope"), None),
            (None, Some(CertName::Principal("stranger".into()))),
            (None, Some(CertName::Nameless)),
            (None, None),
            // A token wins over a certificate, and a bad one is not
            // rescued by a good certificate.
            (Some("nope"), Some(CertName::Principal("viewer".into()))),
        ] {
            let r = who(&p, token, cert.clone());
            assert!(
                matches!(r, Err(Refusal::Unauthenticated(_))),
                "{token:?} {cert:?}: {r:?}"
            );
        }
        let r = identify(
            &p,
            &Credentials {
                authorization: Some("Basic abc"),
                cert_name: None,
            },
        );
        assert!(matches!(r, Err(Refusal::Unauthenticated(m)) if m.contains("Bearer")));
    }

    #[test]
    fn bad_principals_files_are_refused_naming_the_problem() {
        let h = hex(&token_hash("x"));
        for (text, want) in [
            ("[[principal]]\nname = \"\"\n".to_string(), "name"),
            ("[[principal]]\nname = \"a b\"\n".to_string(), "name"),
            ("[[principal]]\nname = \"a\"\nroles = [\"root\"]\n".to_string(), "root"),
            ("[[principal]]\nname = \"a\"\ntokens = [\"abc\"]\n".to_string(), "64 hex"),
            (
                format!("[[principal]]\nname = \"a\"\ntokens = [\"{h}\"]\n[[principal]]\nname = \"b\"\ntokens = [\"{h}\"]\n"),
                "twice",
            ),
            ("[[principal]]\nname = \"a\"\n[[principal]]\nname = \"a\"\n".to_string(), "twice"),
            ("[[principal]]\nname = \"a\"\nwrite = [\"bad topic\"]\n".to_string(), "topic"),
            ("[[principal]]\nname = \"a\"\nsecret = 1\n".to_string(), "secret"),
        ] {
            let e = Principals::parse(&text, "p.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn new_tokens_are_unique_and_match_their_hash() {
        let (t1, h1) = new_token().unwrap();
        let (t2, _) = new_token().unwrap();
        assert_ne!(t1, t2);
        assert_eq!(hex(&token_hash(&t1)), h1);
        assert_eq!(parse_hash(&h1), Some(token_hash(&t1)));
    }
}
