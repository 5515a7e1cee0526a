//! The real Kubernetes control plane `scripts/test` starts from `KUBEBUILDER_ASSETS`
//! (`scripts/control_plane.sh`): an admin client from `WORLDLAND_TEST_KUBECONFIG`, clients for
//! other bearers, and a poll for what the API server does a moment later. Tests that use it are
//! `#[ignore = "needs a real control plane: …"]`, so without a control plane they are counted as skipped, never as passed;
//! `scripts/test` runs them (`--run-ignored all`) when it started one.

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The admin kubeconfig's text.
pub fn kubeconfig_text() -> String {
    let path = std::env::var("WORLDLAND_TEST_KUBECONFIG").expect("WORLDLAND_TEST_KUBECONFIG (scripts/test sets it)");
    std::fs::read_to_string(path).expect("the control plane's admin kubeconfig")
}

async fn client_from(text: &str) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A client for the control plane as the admin (group `system:masters`).
pub async fn admin() -> kube::Client {
    client_from(&kubeconfig_text()).await
}

/// A client as the admin impersonating `user` in `groups` (none: the API server adds a
/// ServiceAccount's own groups, `system:serviceaccounts` and `system:serviceaccounts:<ns>`, and
/// everyone's `system:authenticated`). The admin (group `system:masters`) may impersonate anyone;
/// the impersonated identity then goes through authentication's groups, RBAC, the Node
/// authorizer, NodeRestriction and the ValidatingAdmissionPolicies exactly as the real one.
pub async fn impersonating(user: &str, groups: &[&str]) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(&kubeconfig_text()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
    kube::Client::try_from(config).unwrap()
}

/// The username of a worker's ServiceAccount as infra/k8s/base deploys it (namespace
/// `worldland`), which the admission policies match.
pub fn worker_user(service_account: &str) -> String {
    format!("system:serviceaccount:worldland:{service_account}")
}

/// A client as the worker's ServiceAccount (impersonated, with the groups the API server gives it).
pub async fn as_worker(service_account: &str) -> kube::Client {
    impersonating(&worker_user(service_account), &[]).await
}

/// Objects a test made as the admin, deleted when it is dropped (a failed test too): Nodes,
/// Namespaces, ClusterRoleBindings, Secrets in `kube-system` and Leases in `kube-node-lease`. Deleting what is already gone
/// is fine.
#[derive(Default)]
pub struct Cleanup {
    objects: std::sync::Mutex<Vec<(&'static str, String)>>,
}

impl Cleanup {
    pub fn node(&self, name: &str) {
        self.objects.lock().unwrap().push(("node", name.to_string()));
    }
    pub fn namespace(&self, name: &str) {
        self.objects.lock().unwrap().push(("namespace", name.to_string()));
    }
    pub fn cluster_role_binding(&self, name: &str) {
        self.objects.lock().unwrap().push(("clusterrolebinding", name.to_string()));
    }
    pub fn kube_system_secret(&self, name: &str) {
        self.objects.lock().unwrap().push(("secret", name.to_string()));
    }
    pub fn lease(&self, name: &str) {
        let mut objects = self.objects.lock().unwrap();
        if !objects.contains(&("lease", name.to_string())) {
            objects.push(("lease", name.to_string()));
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        use k8s_openapi::api::coordination::v1::Lease;
        use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
        use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
        use kube::api::{Api, DeleteParams};
        let objects = std::mem::take(&mut *self.objects.lock().unwrap());
        if objects.is_empty() {
            return;
        }
        // A thread with its own runtime: Drop may run inside the test's runtime, which cannot block.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let client = admin().await;
                let dp = DeleteParams::default();
                for (kind, name) in objects {
                    let _ = match kind {
                        "node" => Api::<Node>::all(client.clone()).delete(&name, &dp).await.map(drop),
                        "namespace" => Api::<Namespace>::all(client.clone()).delete(&name, &dp).await.map(drop),
                        "clusterrolebinding" => Api::<ClusterRoleBinding>::all(client.clone()).delete(&name, &dp).await.map(drop),
                        "lease" => Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
                            .delete(&name, &dp)
                            .await
                            .map(drop),
                        _ => Api::<Secret>::namespaced(client.clone(), "kube-system")
                            .delete(&name, &dp)
                            .await
                            .map(drop),
                    };
                }
            });
        })
        .join()
        .unwrap();
    }
}

/// A client as the bearer of `token` instead of the admin.
pub async fn bearer(token: &str) -> kube::Client {
    let text = kubeconfig_text();
    let admin = text.lines().find_map(|l| l.trim().strip_prefix("token: ")).unwrap().to_string();
    client_from(&text.replace(&admin, token)).await
}

/// A client authenticating with a client certificate and its key (PEM), as a kubelet does.
pub async fn with_certificate(cert_pem: &str, key_pem: &str) -> kube::Client {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let text = kubeconfig_text();
    let token_line = text.lines().find(|l| l.trim().starts_with("token: ")).unwrap().to_string();
    let indent = &token_line[..token_line.len() - token_line.trim_start().len()];
    let creds = format!(
        "{indent}client-certificate-data: {}\n{indent}client-key-data: {}",
        b64(cert_pem),
        b64(key_pem)
    );
    client_from(&text.replace(&token_line, &creds)).await
}

/// Polls `check` until it gives a value, for at most `limit_s` seconds: for what the API server
/// or the controller manager does a moment after a write (informers, caches, signing).
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(what: &str, limit_s: u64, mut check: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(limit_s);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {limit_s} s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A fresh name for a test's objects: `prefix-` and 8 random characters of `[a-z0-9]`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
