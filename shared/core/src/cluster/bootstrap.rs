//! kubeadm bootstrap tokens and discovery, pure: token generation, the Secret's data, the CA
//! hash and the join command.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::Certificate;

/// Namespace of bootstrap token Secrets.
pub const TOKEN_NAMESPACE: &str = "kube-system";
/// Secret type that makes the API server treat a Secret as a bootstrap token.
pub const TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Prefix of a token Secret's name; the token id follows.
pub const TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";
/// Group the token authenticates as: the broker's own, not kubeadm's
/// `system:bootstrappers:kubeadm:default-node-token`, which kubeadm binds to the automatic approval
/// of node-client CSRs (any token could then buy a kubelet certificate for any node name). The
/// shipped manifests (infra/k8s/base/bootstrap.yaml) let this group do what `kubeadm join` and
/// the kubelet's TLS bootstrap need, and the broker's CSR approver decides every certificate.
pub const TOKEN_EXTRA_GROUPS: &str = "system:bootstrappers:worldland";
/// Namespace of the `cluster-info` ConfigMap.
pub const CLUSTER_INFO_NAMESPACE: &str = "kube-public";
/// ConfigMap holding the API server URL and CA that joining nodes discover.
pub const CLUSTER_INFO_NAME: &str = "cluster-info";

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `n` characters of `[a-z0-9]` from the OS random source. Bytes ≥ 252 (= 7 × 36) are drawn
/// again, so every character is equally likely: no modulo bias.
pub fn random_token_chars(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        getrandom::getrandom(&mut buf).expect("the OS random source is available");
        for b in buf {
            if b < 252 && out.len() < n {
                out.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    out
}

/// A bootstrap token. Its Debug output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// Public token id: 6 characters of `[a-z0-9]`, also in the Secret's name.
    pub id: String,
    /// Token secret: 16 characters of `[a-z0-9]`.
    pub secret: String,
    /// When the API server stops accepting the token.
    pub expires_at: DateTime<Utc>,
    /// Human-readable note stored on the Secret (which provider it is for).
    pub description: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl BootstrapToken {
    /// A fresh token, random id and secret, expiring at `expires_at`.
    pub fn generate(expires_at: DateTime<Utc>, description: String) -> Self {
        Self {
            id: random_token_chars(6),
            secret: random_token_chars(16),
            expires_at,
            description,
        }
    }

    /// A token with a known id (a reservation made earlier) and a fresh secret.
    pub fn with_id(id: &str, expires_at: DateTime<Utc>, description: String) -> Self {
        Self {
            id: id.to_string(),
            secret: random_token_chars(16),
            expires_at,
            description,
        }
    }

    /// `<id>.<secret>`, what `kubeadm join --token` takes.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// Name of this token's Secret: `bootstrap-token-<id>`.
    pub fn secret_name(&self) -> String {
        secret_name(&self.id)
    }

    /// The Secret's data, in kubeadm's form (plain strings; the API carries them base64).
    pub fn secret_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("auth-extra-groups".into(), TOKEN_EXTRA_GROUPS.into()),
            ("description".into(), self.description.clone()),
            ("expiration".into(), self.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            ("token-id".into(), self.id.clone()),
            ("token-secret".into(), self.secret.clone()),
            ("usage-bootstrap-authentication".into(), "true".into()),
            ("usage-bootstrap-signing".into(), "true".into()),
        ])
    }

    /// Reads a token back from a Secret's data.
    pub fn from_secret_data(data: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self {
            id: data.get("token-id")?.clone(),
            secret: data.get("token-secret")?.clone(),
            expires_at: DateTime::parse_from_rfc3339(data.get("expiration")?).ok()?.with_timezone(&Utc),
            description: data.get("description").cloned().unwrap_or_default(),
        })
    }
}

/// Name of the Secret holding token `token_id`: `bootstrap-token-<id>`.
pub fn secret_name(token_id: &str) -> String {
    format!("{TOKEN_SECRET_PREFIX}{token_id}")
}

/// Why the cluster CA could not be hashed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaError {
    /// The CA data is neither a PEM nor a DER X.509 certificate.
    #[error("cluster CA is neither a PEM nor a DER X.509 certificate")]
    NotACertificate,
}

/// kubeadm's discovery hash: `sha256:` + hex SHA-256 of the CA's DER SubjectPublicKeyInfo.
pub fn ca_cert_hash(ca: &[u8]) -> Result<String, CaError> {
    let cert = Certificate::from_pem(ca)
        .or_else(|_| Certificate::from_der(ca))
        .map_err(|_| CaError::NotACertificate)?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| CaError::NotACertificate)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&spki))))
}

/// Host and port of an API server URL such as `https://10.0.0.1:6443`.
pub fn endpoint_host_port(server: &str) -> (String, u16) {
    let rest = server.split("://").nth(1).unwrap_or(server);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, port) = v6.split_once(']').unwrap_or((v6, ""));
        let port = port.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(443);
        return (host.to_string(), port);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().unwrap_or(443)),
        _ => (authority.to_string(), 443),
    }
}

/// The command a provider runs to join.
pub fn join_command(host: &str, port: u16, token: &str, ca_hash: &str) -> String {
    let hostport = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    format!("kubeadm join {hostport} --token {token} --discovery-token-ca-cert-hash {ca_hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/kube");

    #[test]
    fn ca_hash_matches_the_independently_computed_one() {
        let ca = std::fs::read(format!("{FIXTURES}/ca.crt")).expect("fixture ca.crt");
        let want = std::fs::read_to_string(format!("{FIXTURES}/ca-hash.txt")).unwrap();
        assert_eq!(ca_cert_hash(&ca).unwrap(), want.trim());
        assert_eq!(ca_cert_hash(b"not a cert"), Err(CaError::NotACertificate));
    }

    #[test]
    fn tokens_have_kubeadm_shape_and_spread_evenly() {
        let t = BootstrapToken::generate(Utc::now(), "x".into());
        assert_eq!(t.id.len(), 6);
        assert_eq!(t.secret.len(), 16);
        assert!(t.token().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.'));
        assert!(!format!("{t:?}").contains(&t.secret));
        // 36,000 draws: every character appears, none wildly over-represented.
        let s = random_token_chars(36_000);
        for c in ALPHABET {
            let n = s.bytes().filter(|b| b == c).count();
            assert!((700..1300).contains(&n), "{} drawn {n} times", *c as char);
        }
    }

    #[test]
    fn secret_data_round_trips_and_matches_the_fixture_form() {
        let exp = DateTime::parse_from_rfc3339("2026-11-27T00:00:42Z").unwrap().with_timezone(&Utc);
        let t = BootstrapToken {
            id: "abcdef".into(),
            secret: "0123456789abcdef".into(),
            expires_at: exp,
            description: "d".into(),
        };
        let data = t.secret_data();
        assert_eq!(data["expiration"], "2026-11-27T00:00:42Z");
        assert_eq!(data["auth-extra-groups"], TOKEN_EXTRA_GROUPS);
        assert_eq!(BootstrapToken::from_secret_data(&data), Some(t));
    }

    #[test]
    fn endpoints_and_join_command() {
        let table = [
            ("https://10.0.0.1:6443", ("10.0.0.1", 6443)),
            ("https://127.0.0.1:6443/", ("127.0.0.1", 6443)),
            ("https://api.example.com", ("api.example.com", 443)),
            ("https://[2001:db8::1]:6443", ("2001:db8::1", 6443)),
            ("10.0.0.1:6443", ("10.0.0.1", 6443)),
        ];
        for (url, (h, p)) in table {
            assert_eq!(endpoint_host_port(url), (h.to_string(), p), "{url}");
        }
        assert_eq!(
            join_command("10.0.0.1", 6443, "abcdef.0123456789abcdef", "sha256:ff"),
            "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:ff"
        );
        assert!(join_command("2001:db8::1", 6443, "t", "h").contains("[2001:db8::1]:6443"));
    }
}
