use chrono::Duration;

use super::*;
use crate::provider::{approve, record_token_created, register_pending, reserve_token};
use crate::state::expr::{apply, eval};
use crate::state::{Item, KEY_ATTR};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/csr");
const NODE: &str = "gpu-01-test";
const TOKEN: &str = "abcdef";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}.pem")).unwrap()
}

fn step(item: Option<&Item>, t: crate::provider::Transition) -> Item {
    assert!(eval(&t.cond, item), "{t:?}");
    apply(item, KEY_ATTR, "p1", &t.ops).unwrap()
}

/// Provider p1, approved with token `abcdef` (created), node gpu-01-test, public IP 203.0.113.7.
fn approved(now: DateTime<Utc>) -> ProviderRecord {
    let reg = crate::messages::sample_registration("p1", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", 1);
    let exp = now + Duration::hours(1);
    let item = step(None, register_pending(&reg, "1-0", now));
    let item = step(Some(&item), reserve_token(TOKEN, exp, now));
    let item = step(Some(&item), record_token_created(TOKEN, None, now));
    let item = step(Some(&item), approve(TOKEN, "1-0", exp, now));
    let mut rec = ProviderRecord::from_item(&item).unwrap();
    rec.node_name = NODE.into();
    let mut spec: serde_json::Value = serde_json::from_str(&rec.spec_json).unwrap();
    spec["public_ip"] = "203.0.113.7".into();
    rec.spec_json = spec.to_string();
    rec
}

fn csr(request: &str, signer: &str, username: &str, groups: &[&str], usages: &[&str]) -> Csr {
    Csr {
        name: "csr-1".into(),
        uid: "uid-1".into(),
        signer: signer.into(),
        username: username.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        usages: usages.iter().map(|u| u.to_string()).collect(),
        request: fixture(request),
        ..Default::default()
    }
}

fn client(request: &str) -> Csr {
    let user = format!("{BOOTSTRAP_USER_PREFIX}{TOKEN}");
    csr(
        request,
        CLIENT_SIGNER,
        &user,
        &["system:bootstrappers", TOKEN_EXTRA_GROUPS],
        &["digital signature", "client auth"],
    )
}

fn verdict_code(v: &Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::Leave => "leave",
        Verdict::Deny(d, _) => d.code(),
    }
}

#[test]
fn a_kubelet_request_reads_as_what_it_asks_for() {
    let r = request::parse(&fixture("serving")).unwrap();
    assert_eq!(r.common_names, ["system:node:gpu-01-test"]);
    assert_eq!(r.organizations, ["system:nodes"]);
    assert_eq!(r.dns_names, ["gpu-01-test"]);
    assert_eq!(r.ip_addresses, ["203.0.113.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(r.key, Some(KeyKind::EcdsaP256));
    assert_eq!(request::parse(&fixture("client-p384")).unwrap().key, Some(KeyKind::EcdsaP384));
    assert!(matches!(
        request::parse(&fixture("client-rsa")).unwrap().key,
        Some(KeyKind::Other(_))
    ));
    assert!(request::parse(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n").is_err());
}

#[test]
fn client_requests_from_a_broker_token_table() {
    let now = Utc::now();
    let rec = approved(now);
    let mut certified = rec.clone();
    certified.client_csr = Some("csr-0".into());
    certified.client_csr_uid = Some("uid-0".into());
    certified.client_csr_token = Some(TOKEN.into());
    let mut replayed = certified.clone();
    replayed.client_csr_uid = Some("uid-1".into());
    replayed.state = ProviderState::Joined;
    // The name of a CSR approved earlier (and since deleted), reused for a request naming
    // another node: its name buys nothing.
    let mut reused_name = certified.clone();
    reused_name.client_csr = Some("csr-1".into());
    let mut older_token = certified.clone();
    older_token.client_csr_token = Some("oldtok".into());
    let mut replaced = rec.clone();
    replaced.token_id = Some("zzzzzz".into());
    let mut joined = rec.clone();
    joined.state = ProviderState::Joined;
    let later = now + Duration::hours(2);
    let ours = |p: &'static ProviderRecord| TokenHolder {
        provider: Some(p),
        node_owner: Some("p1"),
    };
    let leak = |r: ProviderRecord| -> &'static ProviderRecord { Box::leak(Box::new(r)) };
    let (rec, certified, replayed, replaced, joined) = (leak(rec), leak(certified), leak(replayed), leak(replaced), leak(joined));
    let (reused_name, older_token) = (leak(reused_name), leak(older_token));
    let mut usages_server = client("client");
    usages_server.usages = vec!["digital signature".into(), "server auth".into()];
    let mut usages_extra = client("client");
    usages_extra.usages.push("code signing".into());
    let table: Vec<(&str, Csr, TokenHolder, DateTime<Utc>, &str)> = vec![
        ("an honest kubelet", client("client"), ours(rec), now, "approve"),
        ("P-384 key", client("client-p384"), ours(rec), now, "approve"),
        (
            "token not the broker's",
            client("client"),
            TokenHolder {
                provider: None,
                node_owner: None,
            },
            now,
            "not_a_broker_token",
        ),
        (
            "another provider's node",
            client("client-other-node"),
            ours(rec),
            now,
            "wrong_node_name",
        ),
        (
            "name reserved by another",
            client("client"),
            TokenHolder {
                provider: Some(rec),
                node_owner: Some("p2"),
            },
            now,
            "wrong_node_name",
        ),
        (
            "name not reserved",
            client("client"),
            TokenHolder {
                provider: Some(rec),
                node_owner: None,
            },
            now,
            "wrong_node_name",
        ),
        (
            "organisation system:masters",
            client("client-masters"),
            ours(rec),
            now,
            "wrong_organization",
        ),
        ("an extra OU", client("client-extra-ou"), ours(rec), now, "wrong_organization"),
        ("alternative names", client("client-with-san"), ours(rec), now, "wrong_alt_names"),
        ("RSA key", client("client-rsa"), ours(rec), now, "wrong_key"),
        ("secp256k1 key", client("client-k256"), ours(rec), now, "wrong_key"),
        ("server auth usage", usages_server, ours(rec), now, "wrong_usages"),
        ("an extra usage", usages_extra, ours(rec), now, "wrong_usages"),
        ("expired token", client("client"), ours(rec), later, "token_expired"),
        ("a second certificate", client("client"), ours(certified), now, "already_certified"),
        ("the recorded one again", client("client"), ours(replayed), now, "approve"),
        (
            "the recorded one, naming another node",
            client("client-other-node"),
            ours(replayed),
            now,
            "wrong_node_name",
        ),
        (
            "the recorded one, with an extra OU",
            client("client-extra-ou"),
            ours(replayed),
            now,
            "wrong_organization",
        ),
        (
            "a reused name, another request",
            client("client-other-node"),
            ours(reused_name),
            now,
            "wrong_node_name",
        ),
        (
            "a reused name, same shape, another uid",
            client("client"),
            ours(reused_name),
            now,
            "already_certified",
        ),
        (
            "a certificate for an older token",
            client("client"),
            ours(older_token),
            now,
            "approve",
        ),
        ("a replaced token", client("client"), ours(replaced), now, "token_not_current"),
        ("already joined", client("client"), ours(joined), now, "token_not_current"),
    ];
    for (what, csr, holder, at, want) in table {
        let req = request::parse(&csr.request);
        let v = decide_client(&csr, &req, TOKEN, holder, at);
        assert_eq!(verdict_code(&v), want, "{what}: {v:?}");
    }
}

#[test]
fn serving_requests_table() {
    let rec = approved(Utc::now());
    let node_user = format!("{NODE_USER_PREFIX}{NODE}");
    let serving = |f: &str| csr(f, SERVING_SIGNER, &node_user, &[NODES_GROUP], &["digital signature", "server auth"]);
    let table = [
        ("its own name and address", serving("serving"), NODE, "approve"),
        ("another address", serving("serving-other-ip"), NODE, "wrong_alt_names"),
        ("another DNS name", serving("serving-other-name"), NODE, "wrong_alt_names"),
        ("no alternative name", serving("client"), NODE, "wrong_alt_names"),
        ("another node's name", serving("client-other-node"), NODE, "wrong_node_name"),
        ("asked by another kubelet", serving("serving"), "gpu-02-other", "wrong_node_name"),
    ];
    for (what, csr, node, want) in table {
        let req = request::parse(&csr.request);
        assert_eq!(verdict_code(&decide_serving(&csr, &req, node, &rec)), want, "{what}");
    }
}

#[test]
fn requesters_and_foreign_requests() {
    let mut c = client("client");
    assert_eq!(requester(&c), Requester::BrokerToken(TOKEN));
    c.groups = vec![
        "system:bootstrappers".into(),
        "system:bootstrappers:kubeadm:default-node-token".into(),
    ];
    assert_eq!(requester(&c), Requester::Other, "a kubeadm token is not the broker's");
    c.username = format!("{NODE_USER_PREFIX}{NODE}");
    c.groups = vec![NODES_GROUP.into()];
    assert_eq!(requester(&c), Requester::Node(NODE));
    c.groups = vec![];
    assert_eq!(requester(&c), Requester::Other);
    assert_eq!(verdict_code(&decide_foreign(Some("p1"), Some(NODE))), "not_a_broker_token");
    assert_eq!(decide_foreign(None, Some("control-plane-1")), Verdict::Leave);
    assert_eq!(decide_foreign(None, None), Verdict::Leave);
    assert_eq!(Denial::WrongNodeName.condition_reason(), "WorldLandWrongNodeName");
}

#[test]
fn renewals_by_a_providers_own_kubelet() {
    let mut rec = approved(Utc::now());
    let node_user = format!("{NODE_USER_PREFIX}{NODE}");
    let renewal = |f: &str| csr(f, CLIENT_SIGNER, &node_user, &[NODES_GROUP], &["digital signature", "client auth"]);
    let table = [
        (ProviderState::Available, "client", "approve"),
        (ProviderState::Offline, "client", "approve"),
        (ProviderState::Expired, "client", "token_not_current"),
        (ProviderState::Rejected, "client", "token_not_current"),
        (ProviderState::Available, "client-other-node", "wrong_node_name"),
        (ProviderState::Available, "client-with-san", "wrong_alt_names"),
        (ProviderState::Available, "client-masters", "wrong_organization"),
    ];
    for (state, request, want) in table {
        rec.state = state;
        let c = renewal(request);
        let req = request::parse(&c.request);
        assert_eq!(verdict_code(&decide_renewal(&c, &req, NODE, &rec)), want, "{state} {request}");
    }
    assert_eq!(verdict_code(&decide_token_serving()), "not_a_broker_token");
}
