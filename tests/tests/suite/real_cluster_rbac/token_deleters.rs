//! The recorder and the sweeper delete spent bootstrap tokens (`worldland-token-deleter`): a
//! token, and no other Secret, not even one named like a token; they read and create none.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_core::cluster::bootstrap::{random_token_chars, TOKEN_NAMESPACE};
use worldland_core::cluster::Cluster;
use worldland_tests::real_cluster::{admin, as_worker, unique, Cleanup};

use super::{admitted, denial, dry_delete, dry_post, fresh_token, rbac_forbids, refused, token_secret, RECORDER, SWEEPER};

/// For the recorder and the sweeper: a Secret the admin made in kube-system.
async fn admin_secret(admin: &kube::Client, cleanup: &Cleanup, name: &str, type_: &str, data: &[(&str, &str)]) {
    cleanup.kube_system_secret(name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(admin.clone(), TOKEN_NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_recorder_and_sweeper_may_delete_only_bootstrap_tokens() {
    let cleanup = Cleanup::default();
    let admin = admin().await;
    let token = fresh_token();
    Api::<Secret>::namespaced(admin.clone(), TOKEN_NAMESPACE)
        .create(&PostParams::default(), &token_secret(&token))
        .await
        .unwrap();
    cleanup.kube_system_secret(&token.secret_name());
    let opaque = unique("wl-probe");
    admin_secret(&admin, &cleanup, &opaque, "Opaque", &[("a", "b")]).await;
    // A bootstrap-token name on a Secret of another type.
    let disguised = format!("bootstrap-token-{}", random_token_chars(6));
    admin_secret(&admin, &cleanup, &disguised, "Opaque", &[("token-id", "x")]).await;
    let policy = "worldland-token-deleter";
    for sa in [RECORDER, SWEEPER] {
        let secrets: Api<Secret> = Api::namespaced(as_worker(sa).await, TOKEN_NAMESPACE);
        admitted(secrets.delete(&token.secret_name(), &dry_delete()).await, &format!("{sa}: a token"));
        for name in [&opaque, &disguised] {
            refused(
                secrets.delete(name, &dry_delete()).await,
                &format!("{sa}: deleting {name}"),
                &denial(policy, "may delete only"),
            );
        }
        // Reads and every other write are RBAC's to refuse.
        refused(
            secrets.get(&token.secret_name()).await,
            "reading a token",
            &rbac_forbids("get", "secrets"),
        );
        refused(
            secrets.create(&dry_post(), &token_secret(&fresh_token())).await,
            &format!("{sa}: creating a token"),
            &rbac_forbids("create", "secrets"),
        );
        refused(
            Api::<Secret>::namespaced(as_worker(sa).await, "default")
                .delete("anything", &dry_delete())
                .await,
            &format!("{sa}: deleting in default"),
            &rbac_forbids("delete", "secrets"),
        );
    }
    // And the real delete, as the recorder's code makes it.
    KubeCluster::new(as_worker(RECORDER).await)
        .delete_bootstrap_token(&token.id)
        .await
        .unwrap();
    assert!(Api::<Secret>::namespaced(admin, TOKEN_NAMESPACE)
        .get_opt(&token.secret_name())
        .await
        .unwrap()
        .is_none());
}
