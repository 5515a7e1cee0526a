//! Kubelets' certificate signing requests through kube-rs: the undecided ones for the kubelet
//! signers, a decision through the approval subresource, and a watch that wakes the approver.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;

use worldland_core::certificates::{CLIENT_SIGNER, SERVING_SIGNER};
use worldland_core::cluster::{ClusterResult, Csr, CsrDecision};
use worldland_core::labels::FIELD_MANAGER;

/// CSRs read per page, and pages read per signer in one pass. Anyone holding a join token can
/// create CSRs: every page is read (decided CSRs stay listed for an hour), up to this bound,
/// which admission keeps far away (`worldland-kubelet-csrs` caps a request at 4 KiB; the
/// approver decides at most a few per requester a pass, oldest first).
const PAGE: u32 = 200;
const MAX_PAGES: usize = 50;

fn csr_of(obj: CertificateSigningRequest) -> Csr {
    let decided = obj
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Approved" || c.type_ == "Denied"));
    let spec = obj.spec;
    Csr {
        uid: obj.metadata.uid.unwrap_or_default(),
        created_s: obj.metadata.creation_timestamp.map(|t| t.0.as_second()).unwrap_or_default(),
        name: obj.metadata.name.unwrap_or_default(),
        resource_version: obj.metadata.resource_version.unwrap_or_default(),
        signer: spec.signer_name,
        username: spec.username.unwrap_or_default(),
        groups: spec.groups.unwrap_or_default(),
        usages: spec.usages.unwrap_or_default(),
        request: spec.request.0,
        decided,
    }
}

/// The undecided CSRs for the two kubelet signers (a field selector on `spec.signerName`).
pub(super) async fn undecided(client: &Client) -> ClusterResult<Vec<Csr>> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut out = Vec::new();
    for signer in [CLIENT_SIGNER, SERVING_SIGNER] {
        let mut params = ListParams::default().fields(&format!("spec.signerName={signer}")).limit(PAGE);
        for _ in 0..MAX_PAGES {
            let page = api.list(&params).await.map_err(super::kube_api::classify)?;
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            out.extend(page.items.into_iter().map(csr_of).filter(|c| !c.decided));
            match next {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(out)
}

/// Writes `decision` as the CSR's condition, on the version the decision was made from.
pub(super) async fn decide(client: &Client, csr: &Csr, decision: &CsrDecision) -> ClusterResult<()> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let condition = serde_json::json!({
        "type": if decision.approve { "Approved" } else { "Denied" },
        "status": "True",
        "reason": decision.reason,
        "message": decision.message,
        "lastUpdateTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": csr.resource_version},
        "status": {"conditions": [condition]},
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    api.patch_approval(&csr.name, &params, &Patch::Merge(&patch))
        .await
        .map_err(super::kube_api::classify)?;
    Ok(())
}

/// A watch on CSRs, started on first use, that leaves a wake-up for the approver on every event
/// (one is kept while nobody waits, so a change between two passes is not missed).
#[derive(Clone, Default)]
pub(super) struct CsrWatch(Arc<OnceLock<Arc<Notify>>>);

impl CsrWatch {
    pub(super) async fn changed(&self, client: &Client, limit: Duration) {
        let notify = self
            .0
            .get_or_init(|| {
                let notify = Arc::new(Notify::new());
                // Metadata only: a wake-up needs no request bodies.
                let api: Api<PartialObjectMeta<CertificateSigningRequest>> = Api::all(client.clone());
                let wake = notify.clone();
                tokio::spawn(async move {
                    // The watcher re-lists and re-watches by itself after errors.
                    let mut events = std::pin::pin!(watcher(api, watcher::Config::default().page_size(PAGE)));
                    while let Some(event) = events.next().await {
                        if let Err(e) = event {
                            tracing::warn!(error = %e, "CSR watch interrupted; it resumes by itself");
                        }
                        wake.notify_one();
                    }
                });
                notify
            })
            .clone();
        let _ = tokio::time::timeout(limit, notify.notified()).await;
    }
}
