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

/// The kubeconfig's `server:` URL.
pub fn server() -> String {
    kubeconfig_text()
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
        .expect("a server in the admin kubeconfig")
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
