//! The `kubeadm join` the SDK runs, built by the SDK itself from validated fields of the broker's
//! answer — never a command string from the network. The token comes from the sealed box, the
//! API endpoint, CA hash and node name from the signed answer; each must have its exact shape
//! (no white space, no shell metacharacter, no leading `-`), and the `join_command` text is
//! ignored.

use std::net::IpAddr;

use worldland_core::messages::{ProviderResponse, SealedJoin};

use crate::{Error, Result};

/// A validated `kubeadm join`: what it runs is [`JoinPlan::argv`], nothing else.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinPlan {
    /// `host:port`, or `[v6]:port`.
    pub endpoint: String,
    /// `<6 of [a-z0-9]>.<16 of [a-z0-9]>`.
    pub token: String,
    /// `sha256:<64 hex digits>`.
    pub ca_hash: String,
    /// RFC 1123 subdomain, lower case: the node name the broker assigned.
    pub node_name: String,
}

impl std::fmt::Debug for JoinPlan {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinPlan({})", self.masked())
    }
}

fn refuse(why: String) -> Error {
    Error::UnsafeJoin(why)
}

/// `^[a-z0-9]{6}\.[a-z0-9]{16}$`.
pub fn is_bootstrap_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    matches!(t.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

/// `^sha256:[0-9a-f]{64}$`.
pub fn is_ca_hash(h: &str) -> bool {
    h.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn is_label(l: &str, lower_only: bool) -> bool {
    (1..=63).contains(&l.len())
        && l.bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b.is_ascii_lowercase() || (!lower_only && b.is_ascii_uppercase()))
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// An RFC 1123 subdomain as Kubernetes names nodes: lower-case labels of `[a-z0-9-]`, 253
/// characters at most.
pub fn is_node_name(n: &str) -> bool {
    (1..=253).contains(&n.len()) && n.split('.').all(|l| is_label(l, true))
}

/// A DNS name (RFC 1123, any case, its last label not all digits) or an IP address.
pub fn is_host(h: &str) -> bool {
    if h.parse::<IpAddr>().is_ok() {
        return true;
    }
    (1..=253).contains(&h.len())
        && h.split('.').all(|l| is_label(l, false))
        && !h.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

impl JoinPlan {
    /// The plan for an approval: token from the opened sealed box, the rest from the signed
    /// answer. `join.join_command` is ignored.
    pub fn from_answer(resp: &ProviderResponse, join: &SealedJoin) -> Result<Self> {
        let host = resp
            .master_ip
            .as_deref()
            .ok_or_else(|| refuse("the answer names no API server (master_ip)".into()))?;
        if !is_host(host) {
            return Err(refuse(format!("master_ip {host:?} is neither an IP address nor a DNS name")));
        }
        let port = resp
            .master_port
            .filter(|p| *p != 0)
            .ok_or_else(|| refuse("the answer names no API server port (master_port)".into()))?;
        let endpoint = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        if !is_bootstrap_token(&join.join_token) {
            return Err(refuse("the join token is not of the form [a-z0-9]{6}.[a-z0-9]{16}".into()));
        }
        let ca_hash = resp.ca_hash.as_deref().unwrap_or_default();
        if !is_ca_hash(ca_hash) {
            return Err(refuse(format!("ca_hash {ca_hash:?} is not sha256:<64 hex digits>")));
        }
        let node_name = resp.node_name.as_deref().unwrap_or_default();
        if !is_node_name(node_name) {
            return Err(refuse(format!("node_name {node_name:?} is not an RFC 1123 name")));
        }
        Ok(Self {
            endpoint,
            token: join.join_token.clone(),
            ca_hash: ca_hash.to_string(),
            node_name: node_name.to_string(),
        })
    }

    /// The exact argv: `kubeadm join <endpoint> --token <token> --discovery-token-ca-cert-hash
    /// <hash> --node-name <node_name>`.
    pub fn argv(&self) -> Vec<String> {
        [
            "kubeadm",
            "join",
            &self.endpoint,
            "--token",
            &self.token,
            "--discovery-token-ca-cert-hash",
            &self.ca_hash,
            "--node-name",
            &self.node_name,
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// The command line with the token masked, for logs and dry runs.
    pub fn masked(&self) -> String {
        let mut argv = self.argv();
        argv[4] = "<token>".into();
        argv.join(" ")
    }
}

/// Runs the plan's `kubeadm join`. With `dry_run` it is only printed, with the token masked.
pub async fn run_join(plan: &JoinPlan, dry_run: bool) -> Result<()> {
    run_join_with("kubeadm", plan, dry_run).await
}

/// [`run_join`] with another program in kubeadm's place (a wrapper, or a test's recorder); the
/// arguments are the plan's, unchanged.
pub async fn run_join_with(program: &str, plan: &JoinPlan, dry_run: bool) -> Result<()> {
    let masked = plan.masked();
    if dry_run {
        println!("dry run: would run: {masked}");
        return Ok(());
    }
    let argv = plan.argv();
    let status = tokio::process::Command::new(program)
        .args(&argv[1..])
        .status()
        .await
        .map_err(|e| Error::Join(format!("{program}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Join(format!("{masked} exited with {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abcdef.0123456789abcdef";
    fn hash() -> String {
        format!("sha256:{}", "0f".repeat(32))
    }

    fn answer(host: &str, port: u16, ca: &str, node: &str) -> ProviderResponse {
        ProviderResponse {
            success: true,
            status: "approved".into(),
            master_ip: Some(host.into()),
            master_port: Some(port),
            ca_hash: Some(ca.into()),
            node_name: Some(node.into()),
            ..Default::default()
        }
    }

    fn sealed(token: &str) -> SealedJoin {
        SealedJoin {
            join_token: token.into(),
            join_command: "touch /tmp/pwned".into(),
        }
    }

    #[test]
    fn argv_comes_from_the_fields_and_ignores_the_command_text() {
        let plan = JoinPlan::from_answer(&answer("10.0.0.1", 6443, &hash(), "gpu-01"), &sealed(TOKEN)).unwrap();
        assert_eq!(
            plan.argv().join(" "),
            format!(
                "kubeadm join 10.0.0.1:6443 --token {TOKEN} --discovery-token-ca-cert-hash {} --node-name gpu-01",
                hash()
            )
        );
        assert!(!plan.masked().contains(TOKEN) && !format!("{plan:?}").contains(TOKEN));
        let v6 = JoinPlan::from_answer(&answer("2001:db8::1", 6443, &hash(), "a.b"), &sealed(TOKEN)).unwrap();
        assert_eq!(v6.endpoint, "[2001:db8::1]:6443");
        let dns = JoinPlan::from_answer(&answer("API.example.com", 443, &hash(), "n"), &sealed(TOKEN)).unwrap();
        assert_eq!(dns.endpoint, "API.example.com:443");
    }

    #[test]
    fn shapes() {
        for good in [TOKEN, "000000.zzzzzzzzzzzzzzzz"] {
            assert!(is_bootstrap_token(good), "{good}");
        }
        for bad in [
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef0123456789abcdef",
            "abcdef.0123456789abcdef ",
            "abcdef.012345678;abcdef",
            "",
        ] {
            assert!(!is_bootstrap_token(bad), "{bad}");
        }
        assert!(is_ca_hash(&hash()));
        for bad in [
            format!("sha256:{}", "0F".repeat(32)),
            format!("sha1:{}", "0f".repeat(32)),
            format!("{} ", hash()),
            "sha256:".into(),
        ] {
            assert!(!is_ca_hash(&bad), "{bad}");
        }
        for good in ["gpu-01", "a", "n1.example.com", &"a".repeat(63)] {
            assert!(is_node_name(good), "{good}");
        }
        for bad in ["GPU-01", "-gpu", "gpu-", "a..b", "a b", "a;b", "$(id)", "", &"a".repeat(64)] {
            assert!(!is_node_name(bad), "{bad}");
        }
        for good in ["10.0.0.1", "::1", "api.example.com", "k8s"] {
            assert!(is_host(good), "{good}");
        }
        for bad in ["10.0.0.1:6443", "a b", "-x", "1.2.3.999", "x;touch", "[::1]", ""] {
            assert!(!is_host(bad), "{bad}");
        }
        assert!(JoinPlan::from_answer(&answer("10.0.0.1", 0, &hash(), "n"), &sealed(TOKEN)).is_err());
    }
}
