//! A kubelet's TLS bootstrap, played through the API as the tests have no kubelet: an ECDSA
//! P-256 key and a PKCS#10 request made by `openssl` (as a kubelet makes them), the CSR object
//! created as the bearer of a join token, the decision and certificate read back.

use std::io::Write;
use std::process::{Command, Stdio};

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::real_cluster::until;

fn openssl(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl on PATH");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh ECDSA P-256 key (PKCS#8 PEM), what a kubelet generates.
pub fn key() -> String {
    let sec1 = openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout"], None);
    openssl(&["pkcs8", "-topk8", "-nocrypt"], Some(&sec1))
}

/// A PKCS#10 request signed by `key` for `subject` (`/O=system:nodes/CN=system:node:x`), with
/// `subjectAltName` when given (`DNS:x,IP:1.2.3.4`).
pub fn request(key: &str, subject: &str, alt_names: Option<&str>) -> String {
    let dir = std::env::temp_dir().join(format!("wl-kubelet-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key.pem");
    std::fs::write(&key_file, key).unwrap();
    let san = alt_names.map(|s| format!("subjectAltName={s}"));
    let mut args = vec!["req", "-new", "-key", key_file.to_str().unwrap(), "-subj", subject];
    if let Some(san) = &san {
        args.extend(["-addext", san.as_str()]);
    }
    let pem = openssl(&args, None);
    std::fs::remove_dir_all(&dir).unwrap();
    pem
}

/// Creates CSR `name` for `signer` with `usages`, as whoever `client` authenticates.
pub async fn submit(client: kube::Client, name: &str, signer: &str, request: &str, usages: &[&str]) -> Result<(), kube::Error> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            signer_name: signer.to_string(),
            request: ByteString(request.as_bytes().to_vec()),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    csrs.create(&PostParams::default(), &csr).await.map(|_| ())
}

/// A CSR's decision as the API server holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Approved (`true`) or Denied.
    pub approved: bool,
    /// The condition's reason.
    pub reason: String,
    /// The condition's message.
    pub message: String,
}

/// The CSR's Approved or Denied condition, once it has one (within `limit_s`).
pub async fn decision(admin: kube::Client, name: &str, limit_s: u64) -> Decided {
    let csrs: Api<CertificateSigningRequest> = Api::all(admin);
    until(&format!("CSR {name} decided"), limit_s, || async {
        let csr = csrs.get(name).await.ok()?;
        let c = csr
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Approved" || c.type_ == "Denied")?;
        Some(Decided {
            approved: c.type_ == "Approved",
            reason: c.reason.unwrap_or_default(),
            message: c.message.unwrap_or_default(),
        })
    })
    .await
}

/// The signed certificate (PEM), once the controller manager has issued it.
pub async fn certificate(admin: kube::Client, name: &str, limit_s: u64) -> String {
    let csrs: Api<CertificateSigningRequest> = Api::all(admin);
    until(&format!("CSR {name} signed"), limit_s, || async {
        let cert = csrs.get(name).await.ok()?.status?.certificate?;
        (!cert.0.is_empty()).then(|| String::from_utf8(cert.0).unwrap())
    })
    .await
}

/// Whether a CSR has neither decision nor certificate.
pub async fn undecided(admin: kube::Client, name: &str) -> bool {
    let csrs: Api<CertificateSigningRequest> = Api::all(admin);
    let csr = csrs.get(name).await.unwrap();
    let status = csr.status.unwrap_or_default();
    status.certificate.is_none()
        && !status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Approved" || c.type_ == "Denied")
}
