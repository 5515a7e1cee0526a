//! Which kubelet certificate requests the broker approves. Pure: the CSR as the API server holds
//! it, what its PKCS#10 request asks for ([`request`]), and what the store says about the
//! provider it names decide it.
//!
//! kubeadm lets any bootstrap token in its group buy a kubelet client certificate for any node
//! name (its `nodeclient` auto-approval). The broker's tokens carry a group of its own instead
//! ([`crate::cluster::bootstrap::TOKEN_EXTRA_GROUPS`]) and every request made with one is decided
//! here:
//! - **client** (`kubernetes.io/kube-apiserver-client-kubelet`): approved only when the requester
//!   is `system:bootstrap:<id>` for a live token this broker issued (its `token#<id>` reservation
//!   names the provider), the provider is approved and that token is its current one, the subject
//!   is exactly `CN=system:node:<the name reserved for that provider>, O=system:nodes`, the key
//!   and usages are a kubelet's, there are no alternative names, and no other CSR has been
//!   approved for that token. Everything else from a broker token is denied with a reason. A
//!   provider's kubelet renewing its own certificate is approved while the provider is in the
//!   cluster, denied once it is not.
//! - **serving** (`kubernetes.io/kubelet-serving`): approved only when a provider's node asks for
//!   its own name (`system:node:<name>` asking `CN=system:node:<name>`) with alternative names
//!   limited to that name and the provider's registered public IP.
//!
//! Every request from a broker token or a provider's kubelet is decided here. Requests from
//! anyone else that do not name a provider's node (an operator joining one of the broker's own
//! machines with a kubeadm token, such a node renewing) are left to the cluster's administrator;
//! those that name a provider's node are denied.

pub mod request;

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::cluster::bootstrap::TOKEN_EXTRA_GROUPS;
pub use crate::cluster::csr::Csr;
use crate::messages::ProviderState;
use crate::provider::ProviderRecord;
pub use request::{KeyKind, Requested, Unreadable};

/// Signer of kubelet client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Signer of kubelet serving certificates.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// Username prefix of a bootstrap token's bearer.
pub const BOOTSTRAP_USER_PREFIX: &str = "system:bootstrap:";
/// Username prefix of a kubelet (and CN prefix of its certificates).
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group (and the certificate's organisation) of every kubelet.
pub const NODES_GROUP: &str = "system:nodes";

/// Why a request is denied: a stable code, and the CSR condition's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The requester is not a bootstrap token this broker issued (or is a kubelet renewing).
    NotBrokerToken,
    /// The token is not the provider's current one, or the provider is not waiting to join.
    TokenNotCurrent,
    /// The token has expired.
    TokenExpired,
    /// The provider already has a client certificate.
    AlreadyCertified,
    /// The subject's CN is not `system:node:<the name reserved for this provider>`.
    WrongNodeName,
    /// The subject's organisation is not exactly `system:nodes`, or it has other attributes.
    WrongOrganization,
    /// The usages are not a kubelet's.
    WrongUsages,
    /// The key is not a kubelet's (ECDSA P-256 or P-384).
    WrongKey,
    /// Alternative names a kubelet does not ask for (any, for a client certificate; other than
    /// its own name and address, for a serving one).
    WrongAltNames,
    /// The request cannot be read.
    Unreadable,
}

impl Denial {
    /// Stable snake-case code (logs, `providers show`).
    pub fn code(self) -> &'static str {
        match self {
            Self::NotBrokerToken => "not_a_broker_token",
            Self::TokenNotCurrent => "token_not_current",
            Self::TokenExpired => "token_expired",
            Self::AlreadyCertified => "already_certified",
            Self::WrongNodeName => "wrong_node_name",
            Self::WrongOrganization => "wrong_organization",
            Self::WrongUsages => "wrong_usages",
            Self::WrongKey => "wrong_key",
            Self::WrongAltNames => "wrong_alt_names",
            Self::Unreadable => "unreadable_request",
        }
    }

    /// The reason written on the CSR's Denied condition (CamelCase, as Kubernetes' own).
    pub fn condition_reason(self) -> String {
        let camel: String = self
            .code()
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect();
        format!("WorldLand{camel}")
    }
}

/// What the broker does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Approve it.
    Approve,
    /// Deny it, with the reason and a message for the CSR and `providers show`.
    Deny(Denial, String),
    /// Not the broker's to decide (left to the cluster's administrator).
    Leave,
}

fn deny(d: Denial, message: impl Into<String>) -> Verdict {
    Verdict::Deny(d, message.into())
}

/// Who made a request, from the API server's authentication of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester<'a> {
    /// A bootstrap token carrying the broker's group: its id.
    BrokerToken(&'a str),
    /// A kubelet, by node name.
    Node(&'a str),
    /// Anyone else (another token, a user, a ServiceAccount).
    Other,
}

/// Who made `csr`.
pub fn requester(csr: &Csr) -> Requester<'_> {
    if let Some(id) = csr.username.strip_prefix(BOOTSTRAP_USER_PREFIX) {
        if csr.groups.iter().any(|g| g == TOKEN_EXTRA_GROUPS) {
            return Requester::BrokerToken(id);
        }
    } else if let Some(node) = csr.username.strip_prefix(NODE_USER_PREFIX) {
        if csr.groups.iter().any(|g| g == NODES_GROUP) {
            return Requester::Node(node);
        }
    }
    Requester::Other
}

/// The node name a request's subject names (`CN=system:node:<name>`), if exactly one.
pub fn named_node(req: &Requested) -> Option<&str> {
    match req.common_names.as_slice() {
        [cn] => cn.strip_prefix(NODE_USER_PREFIX),
        _ => None,
    }
}

/// What the store says about the provider a broker token was issued for.
#[derive(Debug, Clone, Copy)]
pub struct TokenHolder<'a> {
    /// The provider the token's `token#<id>` reservation names, if it has one and it loads.
    pub provider: Option<&'a ProviderRecord>,
    /// Who holds the provider's node name (its `node#<name>` reservation).
    pub node_owner: Option<&'a str>,
}

/// A client request made with broker token `token_id`. Every check of what it asks for comes
/// first, so a replay is recognised only for a request that passes them all, and only by the
/// uid recorded for this token.
pub fn decide_client(
    csr: &Csr,
    req: &Result<Requested, Unreadable>,
    token_id: &str,
    holder: TokenHolder<'_>,
    now: DateTime<Utc>,
) -> Verdict {
    let Some(rec) = holder.provider else {
        return deny(Denial::NotBrokerToken, format!("token {token_id} was not issued by this broker"));
    };
    if rec.token_id.as_deref() != Some(token_id) || rec.token_created.as_deref() != Some(token_id) {
        return deny(
            Denial::TokenNotCurrent,
            format!("token {token_id} is not this provider's current join token"),
        );
    }
    let req = match req {
        Ok(r) => r,
        Err(e) => return deny(Denial::Unreadable, e.to_string()),
    };
    if named_node(req) != Some(rec.node_name.as_str()) || holder.node_owner != Some(rec.provider_id.as_str()) {
        return deny(
            Denial::WrongNodeName,
            format!(
                "the request must name node {} (CN=system:node:{}), the one reserved for this provider",
                rec.node_name, rec.node_name
            ),
        );
    }
    if let Some(v) = client_shape(csr, req) {
        return v;
    }
    if rec.client_csr_token.as_deref() == Some(token_id) {
        return if rec.client_csr_uid.as_deref() == Some(csr.uid.as_str()) {
            Verdict::Approve // recorded already: an approval whose write or answer was lost
        } else {
            deny(
                Denial::AlreadyCertified,
                "this join token has already bought a kubelet client certificate",
            )
        };
    }
    if rec.state != ProviderState::Approved {
        return deny(
            Denial::TokenNotCurrent,
            format!("the provider is {}, not waiting to join", rec.state),
        );
    }
    if rec.token_expires_at.is_none_or(|exp| exp <= now) {
        return deny(Denial::TokenExpired, format!("token {token_id} has expired"));
    }
    Verdict::Approve
}

/// Organisation, key, usages and no alternative names, as a kubelet's client request.
fn client_shape(csr: &Csr, req: &Requested) -> Option<Verdict> {
    if let Some(v) = kubelet_shape(csr, req, "client auth") {
        return Some(v);
    }
    if !req.dns_names.is_empty() || !req.ip_addresses.is_empty() || req.other_names {
        return Some(deny(
            Denial::WrongAltNames,
            "a kubelet client certificate carries no alternative names or other extensions",
        ));
    }
    None
}

/// A client request from the kubelet of provider node `node` itself (a certificate rotation):
/// approved for its own name while the provider is in the cluster (joined, available, busy or
/// offline), so a year-old certificate does not cut a provider off; denied once it has expired
/// or been refused, and for any other name.
pub fn decide_renewal(csr: &Csr, req: &Result<Requested, Unreadable>, node: &str, rec: &ProviderRecord) -> Verdict {
    let req = match req {
        Ok(r) => r,
        Err(e) => return deny(Denial::Unreadable, e.to_string()),
    };
    if named_node(req) != Some(node) || rec.node_name != node {
        return deny(Denial::WrongNodeName, format!("node {node} may ask only for CN=system:node:{node}"));
    }
    if let Some(v) = client_shape(csr, req) {
        return v;
    }
    match rec.state {
        ProviderState::Joined | ProviderState::Available | ProviderState::Busy | ProviderState::Offline => Verdict::Approve,
        other => deny(
            Denial::TokenNotCurrent,
            format!("the provider is {other}: its kubelet's certificate is not renewed"),
        ),
    }
}

/// Organisation, key and usages as a kubelet asks for them; `None` when they are.
fn kubelet_shape(csr: &Csr, req: &Requested, auth_usage: &str) -> Option<Verdict> {
    if req.organizations != [NODES_GROUP] || !req.other_subject.is_empty() {
        return Some(deny(
            Denial::WrongOrganization,
            "the subject must be O=system:nodes with nothing else beside the CN",
        ));
    }
    if !matches!(req.key, Some(KeyKind::EcdsaP256 | KeyKind::EcdsaP384)) {
        return Some(deny(Denial::WrongKey, "a kubelet's key is ECDSA P-256 (or P-384)"));
    }
    let allowed = ["digital signature", "key encipherment", auth_usage];
    let usages_ok = csr.usages.iter().all(|u| allowed.contains(&u.as_str()))
        && csr.usages.iter().any(|u| u == auth_usage)
        && csr.usages.iter().any(|u| u == "digital signature");
    if !usages_ok {
        return Some(deny(
            Denial::WrongUsages,
            format!(
                "usages must be digital signature and {auth_usage} (key encipherment allowed), got {:?}",
                csr.usages
            ),
        ));
    }
    None
}

/// A serving request from kubelet `node` of `rec`'s provider.
pub fn decide_serving(csr: &Csr, req: &Result<Requested, Unreadable>, node: &str, rec: &ProviderRecord) -> Verdict {
    let req = match req {
        Ok(r) => r,
        Err(e) => return deny(Denial::Unreadable, e.to_string()),
    };
    if named_node(req) != Some(node) || rec.node_name != node {
        return deny(Denial::WrongNodeName, format!("node {node} may ask only for CN=system:node:{node}"));
    }
    if let Some(v) = kubelet_shape(csr, req, "server auth") {
        return v;
    }
    let public_ip = registered_public_ip(rec);
    let names_ok = req.dns_names.iter().all(|d| d == node);
    let ips_ok = req.ip_addresses.iter().all(|ip| Some(*ip) == public_ip);
    let some = !req.dns_names.is_empty() || !req.ip_addresses.is_empty();
    if !names_ok || !ips_ok || !some || req.other_names {
        let ip = public_ip.map(|i| i.to_string()).unwrap_or_else(|| "none registered".into());
        return deny(
            Denial::WrongAltNames,
            format!("a serving certificate may name only the node ({node}) and the provider's registered public IP ({ip})"),
        );
    }
    Verdict::Approve
}

/// The public IP the provider registered, from its stored spec.
pub fn registered_public_ip(rec: &ProviderRecord) -> Option<IpAddr> {
    let spec: crate::messages::Spec = serde_json::from_str(&rec.spec_json).ok()?;
    spec.public_ip.parse().ok()
}

/// A request a broker token has no business making (a serving certificate): denied.
pub fn decide_token_serving() -> Verdict {
    deny(Denial::NotBrokerToken, "a join token asks only for a kubelet client certificate")
}

/// A request from outside the broker's group and not from a provider's kubelet: denied when it
/// names a provider's node (`owner` of its CN's name is some), else left to the administrator.
pub fn decide_foreign(node_owner: Option<&str>, named: Option<&str>) -> Verdict {
    match (node_owner, named) {
        (Some(_), Some(node)) => deny(
            Denial::NotBrokerToken,
            format!("node {node} is a provider's: its client certificate is issued only through the broker's join token"),
        ),
        _ => Verdict::Leave,
    }
}

#[cfg(test)]
mod tests;
