//! The join-token issuer's writes (`worldland-join-token-issuer`): bootstrap-token Secrets in
//! kube-system, typed, named and expiring as a token must be, and deleting only a token.

use std::collections::BTreeMap;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, Patch, PostParams};
use serde_json::json;
use worldland_core::cluster::bootstrap::{BootstrapToken, TOKEN_NAMESPACE, TOKEN_SECRET_TYPE};
use worldland_tests::real_cluster::{admin, as_worker, unique, Cleanup};

use super::{admitted, denial, dry_delete, dry_patch, dry_post, fresh_token, rbac_forbids, refused, token_secret, ISSUER};

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_issuer_may_create_only_expiring_bootstrap_tokens_in_kube_system() {
    let cleanup = Cleanup::default();
    let admin = admin().await;
    let other_ns = unique("wl-rbac");
    cleanup.namespace(&other_ns);
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(other_ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let issuer = as_worker(ISSUER).await;
    let secrets: Api<Secret> = Api::namespaced(issuer.clone(), TOKEN_NAMESPACE);
    let policy = "worldland-join-token-issuer";

    let made = admitted(secrets.create(&dry_post(), &token_secret(&fresh_token())).await, "a proper token");
    assert_eq!(made.type_.as_deref(), Some(TOKEN_SECRET_TYPE));

    let mut opaque = token_secret(&fresh_token());
    opaque.type_ = Some("Opaque".into());
    refused(
        secrets.create(&dry_post(), &opaque).await,
        "an Opaque Secret",
        &denial(policy, "create only Secrets of type"),
    );

    let mut untyped = token_secret(&fresh_token());
    untyped.type_ = None;
    refused(
        secrets.create(&dry_post(), &untyped).await,
        "a Secret with no type",
        &denial(policy, "create only Secrets of type"),
    );

    let mut sa_token = token_secret(&fresh_token());
    sa_token.type_ = Some("kubernetes.io/service-account-token".into());
    sa_token.metadata.annotations = Some(BTreeMap::from([("kubernetes.io/service-account.name".into(), "default".into())]));
    refused(
        secrets.create(&dry_post(), &sa_token).await,
        "a ServiceAccount token Secret",
        &denial(policy, "create only Secrets of type"),
    );

    for name in [
        "worldland-credentials",
        "bootstrap-token-abc",
        "bootstrap-token-abc-de",
        "bootstrap-token-abcdefg",
    ] {
        let mut renamed = token_secret(&fresh_token());
        renamed.metadata.name = Some(name.into());
        refused(secrets.create(&dry_post(), &renamed).await, name, &denial(policy, "named"));
    }

    let mut everlasting = token_secret(&fresh_token());
    everlasting.data.as_mut().unwrap().remove("expiration");
    refused(
        secrets.create(&dry_post(), &everlasting).await,
        "a token with no expiration",
        &denial(policy, "must carry an expiration"),
    );

    // Nor one that outlives the configured lifetime (WORLDLAND_TOKEN_TTL_S, 3600 s in
    // worldland-config, give or take 5 minutes of clock skew) — in either spelling of the time.
    let ttl = chrono::Duration::seconds(3600);
    for (lifetime, admit) in [
        (ttl, true),
        (ttl + chrono::Duration::minutes(4), true),
        (ttl + chrono::Duration::minutes(6), false),
        (chrono::Duration::days(7), false),
        (chrono::Duration::days(3650), false),
    ] {
        let token = BootstrapToken::generate(Utc::now() + lifetime, "worldland rbac test".into());
        let result = secrets.create(&dry_post(), &token_secret(&token)).await;
        let what = format!("a token living {} s", lifetime.num_seconds());
        if admit {
            admitted(result, &what);
        } else {
            refused(result, &what, &denial(policy, "expires within"));
        }
    }
    for expiration in [
        "2026-12-08T00:00:00+00:00",
        "2099-01-01T00:00:00Z",
        "1767225600",
        "not a time at all!!",
    ] {
        let mut odd = token_secret(&fresh_token());
        odd.data
            .as_mut()
            .unwrap()
            .insert("expiration".into(), ByteString(expiration.as_bytes().to_vec()));
        let expected = if expiration.ends_with('Z') {
            "expires within"
        } else {
            "YYYY-MM-DDTHH:MM:SSZ"
        };
        refused(secrets.create(&dry_post(), &odd).await, expiration, &denial(policy, expected));
    }

    // A stolen issuer token mints no token in another group.
    for groups in [
        "system:bootstrappers:kubeadm:default-node-token",
        "system:bootstrappers:worldland,system:bootstrappers:kubeadm:default-node-token",
        "system:masters",
    ] {
        let mut other = token_secret(&fresh_token());
        other
            .data
            .as_mut()
            .unwrap()
            .insert("auth-extra-groups".into(), ByteString(groups.as_bytes().to_vec()));
        refused(
            secrets.create(&dry_post(), &other).await,
            groups,
            &denial(policy, "exactly the group"),
        );
    }

    // Elsewhere RBAC refuses first (the policy would too).
    for ns in [other_ns.as_str(), "default", "worldland"] {
        let mut moved = token_secret(&fresh_token());
        moved.metadata.namespace = Some(ns.into());
        refused(
            Api::<Secret>::namespaced(issuer.clone(), ns).create(&dry_post(), &moved).await,
            &format!("a token in {ns}"),
            &rbac_forbids("create", "secrets"),
        );
    }

    // It may delete a token (the one it replaces), and only a token: the policy refuses any
    // other Secret. No update: RBAC refuses.
    let real = fresh_token();
    let name = real.secret_name();
    cleanup.kube_system_secret(&name);
    admitted(secrets.create(&PostParams::default(), &token_secret(&real)).await, "a real token");
    admitted(secrets.delete(&name, &dry_delete()).await, "deleting its token");
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), TOKEN_NAMESPACE);
    let other = unique("wl-not-a-token");
    let not_a_token: Secret =
        serde_json::from_value(json!({"metadata": {"name": other}, "type": "Opaque", "stringData": {"a": "b"}})).unwrap();
    admin_secrets.create(&PostParams::default(), &not_a_token).await.unwrap();
    cleanup.kube_system_secret(&other);
    refused(
        secrets.delete(&other, &dry_delete()).await,
        "deleting a Secret that is not a token",
        &denial(policy, "delete only"),
    );
    refused(
        secrets
            .patch(&name, &dry_patch(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
            .await,
        "patching its token",
        &rbac_forbids("patch", "secrets"),
    );
    refused(secrets.get(&name).await, "reading its token back", &rbac_forbids("get", "secrets"));
}
