//! CSR approver: decides the kubelets' certificate signing requests, so that a join token buys a
//! kubelet certificate for its own provider's node name and nothing else
//! ([`worldland_core::certificates`] says which are approved and why the rest are denied).
//!
//! For an approved client request it records the CSR on the provider first (one per provider,
//! a conditional write that recognises its own replay), then creates the provider's Node
//! carrying the `worldland.io/provider` taint — before the kubelet can register it, so nothing
//! the broker runs is ever scheduled there — and only then writes the approval; the controller
//! manager signs it. A crash anywhere in between is redone by the next pass: the CSR is still
//! undecided, the record already names it, the Node already exists. Denials are written on the
//! CSR's condition and on the provider's record (`worldland providers show`).
//!
//! In a container it passes whenever a CSR changes (a watch) and at least every
//! [`RESYNC`]; on Lambda, once per scheduled event (once a minute, well within kubeadm's
//! five-minute wait for the kubelet's TLS bootstrap).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use worldland_core::certificates::{
    decide_client, decide_foreign, decide_renewal, decide_serving, decide_token_serving, named_node, request, requester, Denial, Requested,
    Requester, TokenHolder, Unreadable, Verdict, CLIENT_SIGNER, SERVING_SIGNER,
};
use worldland_core::cluster::{Cluster, ClusterError, Csr, CsrDecision};
use worldland_core::provider::certs::{record_client_csr, record_csr_refusal, ApprovedCsr};
use worldland_core::provider::{nodes, tokens, ProviderRecord};
use worldland_core::state::{ItemStore, StoreError};
use worldland_core::BoxError;
use worldland_runtime::backends::BackendError;
use worldland_runtime::worker::{Service, Worker};
use worldland_runtime::Backends;

pub const WORKER: &str = "csr-approver";

/// The longest a container waits between passes when no CSR changes.
pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(30);

/// Why one CSR could not be decided this pass (the next pass tries again).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("provider {0} changed while its certificate was decided; decided again next pass")]
    Raced(String),
}

pub struct Context {
    pub store: Arc<dyn ItemStore>,
    pub cluster: Arc<dyn Cluster>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub examined: usize,
    pub approved: usize,
    pub denied: usize,
    /// Not the broker's to decide (left to the administrator).
    pub left: usize,
    /// Not decided for a store or cluster error; tried again next pass.
    pub failed: usize,
}

/// CSRs one requester may have decided in one pass: a token holder flooding the cluster with
/// requests delays only its own, never another provider's.
pub const PER_REQUESTER: usize = 3;

/// The CSRs to decide this pass: oldest first, at most [`PER_REQUESTER`] of each requester.
pub fn this_pass(mut csrs: Vec<Csr>) -> Vec<Csr> {
    csrs.sort_by(|a, b| (a.created_s, &a.name).cmp(&(b.created_s, &b.name)));
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    csrs.retain(|c| {
        let n = seen.entry(c.username.clone()).or_default();
        *n += 1;
        *n <= PER_REQUESTER
    });
    csrs
}

/// One pass over the undecided kubelet CSRs.
pub async fn approve_pending(ctx: &Context, now: DateTime<Utc>) -> Result<Report, ClusterError> {
    let csrs = this_pass(ctx.cluster.undecided_kubelet_csrs().await?);
    let mut report = Report {
        examined: csrs.len(),
        ..Default::default()
    };
    for csr in &csrs {
        match decide_one(ctx, csr, now).await {
            Ok(Verdict::Approve) => report.approved += 1,
            Ok(Verdict::Deny(..)) => report.denied += 1,
            Ok(Verdict::Leave) => report.left += 1,
            Err(e) => {
                report.failed += 1;
                tracing::warn!(csr = %csr.name, error = %e, "CSR not decided this pass");
            }
        }
    }
    Ok(report)
}

/// A verdict and the provider it concerns (whose record notes a denial), if any.
struct Judged {
    verdict: Verdict,
    provider: Option<ProviderRecord>,
}

async fn load(store: &dyn ItemStore, provider_id: Option<String>) -> Result<Option<ProviderRecord>, StoreError> {
    match provider_id {
        Some(id) => ProviderRecord::load(store, &id).await,
        None => Ok(None),
    }
}

/// What the store says about `csr`, and the verdict.
async fn judge(ctx: &Context, csr: &Csr, req: &Result<Requested, Unreadable>, now: DateTime<Utc>) -> Result<Judged, Error> {
    let store = ctx.store.as_ref();
    let judged = |verdict, provider| Judged { verdict, provider };
    Ok(match (requester(csr), csr.signer.as_str()) {
        (Requester::BrokerToken(id), CLIENT_SIGNER) => {
            let provider = load(store, tokens::owner(store, id).await?).await?;
            let node_owner = match &provider {
                Some(p) => nodes::owner(store, &p.node_name).await?,
                None => None,
            };
            let holder = TokenHolder {
                provider: provider.as_ref(),
                node_owner: node_owner.as_deref(),
            };
            judged(decide_client(csr, req, id, holder, now), provider)
        }
        (Requester::BrokerToken(_), _) => judged(decide_token_serving(), None),
        (Requester::Node(node), signer) => match load(store, nodes::owner(store, node).await?).await? {
            Some(rec) if signer == SERVING_SIGNER => judged(decide_serving(csr, req, node, &rec), Some(rec)),
            Some(rec) => judged(decide_renewal(csr, req, node, &rec), Some(rec)),
            None => foreign(store, req).await?,
        },
        (Requester::Other, _) => foreign(store, req).await?,
    })
}

/// A request from neither a broker token nor a provider's kubelet.
async fn foreign(store: &dyn ItemStore, req: &Result<Requested, Unreadable>) -> Result<Judged, Error> {
    let named = req.as_ref().ok().and_then(named_node);
    let owner = match named {
        Some(n) => nodes::owner(store, n).await?,
        None => None,
    };
    Ok(Judged {
        verdict: decide_foreign(owner.as_deref(), named),
        provider: None,
    })
}

/// Decides one CSR and writes the decision.
async fn decide_one(ctx: &Context, csr: &Csr, now: DateTime<Utc>) -> Result<Verdict, Error> {
    let req = request::parse(&csr.request);
    let judged = judge(ctx, csr, &req, now).await?;
    match (&judged.verdict, judged.provider) {
        (Verdict::Approve, Some(rec)) if matches!(requester(csr), Requester::BrokerToken(_)) => approve_client(ctx, csr, &rec, now).await?,
        (Verdict::Approve, _) if csr.signer == SERVING_SIGNER => {
            write(
                ctx,
                csr,
                true,
                "WorldLandKubeletServing",
                "the node's own name and registered address",
            )
            .await?
        }
        (Verdict::Approve, _) => {
            write(
                ctx,
                csr,
                true,
                "WorldLandKubeletRenewal",
                "the provider's kubelet, for its own name",
            )
            .await?
        }
        (Verdict::Deny(d, message), rec) => deny(ctx, csr, *d, message, rec.as_ref(), now).await?,
        (Verdict::Leave, _) => {
            tracing::debug!(csr = %csr.name, user = %csr.username, "not a provider's request: left to the administrator")
        }
    }
    Ok(judged.verdict)
}

/// Records the CSR on the provider, creates its tainted Node, approves.
async fn approve_client(ctx: &Context, csr: &Csr, rec: &ProviderRecord, now: DateTime<Utc>) -> Result<(), Error> {
    let approved = ApprovedCsr {
        name: &csr.name,
        uid: &csr.uid,
        token_id: rec.token_id.as_deref().unwrap_or_default(),
    };
    if !record_client_csr(approved, now).apply(ctx.store.as_ref(), &rec.provider_id).await? {
        return Err(Error::Raced(rec.provider_id.clone()));
    }
    ctx.cluster.create_provider_node(&rec.node_name).await?;
    let message = format!("a broker join token, for the node name reserved for it ({})", rec.node_name);
    write(ctx, csr, true, "WorldLandJoinToken", &message).await?;
    tracing::info!(csr = %csr.name, provider_id = %rec.provider_id, node = %rec.node_name, "kubelet client certificate approved");
    Ok(())
}

async fn deny(ctx: &Context, csr: &Csr, d: Denial, message: &str, rec: Option<&ProviderRecord>, now: DateTime<Utc>) -> Result<(), Error> {
    tracing::warn!(csr = %csr.name, user = %csr.username, reason = d.code(), "certificate request denied: {message}");
    write(ctx, csr, false, &d.condition_reason(), message).await?;
    if let Some(rec) = rec {
        let why = format!("{}: {} (CSR {})", d.code(), message, csr.name);
        record_csr_refusal(&why, now).apply(ctx.store.as_ref(), &rec.provider_id).await?;
    }
    Ok(())
}

/// Writes the decision; a CSR that changed since it was read (decided by another approver) is
/// left for the next pass to see.
async fn write(ctx: &Context, csr: &Csr, approve: bool, reason: &str, message: &str) -> Result<(), Error> {
    let decision = CsrDecision {
        approve,
        reason: reason.to_string(),
        message: message.to_string(),
    };
    match ctx.cluster.decide_csr(csr, &decision).await {
        Err(ClusterError::Refused { status: Some(409), .. }) => {
            tracing::info!(csr = %csr.name, "CSR changed since it was read; the next pass sees it");
            Ok(())
        }
        other => Ok(other?),
    }
}

/// The approver as a worker: a pass per CSR change in a container, one per scheduled event on
/// Lambda.
pub struct CsrApprover {
    pub ctx: Arc<Context>,
}

#[async_trait::async_trait]
impl Service for CsrApprover {
    fn name(&self) -> &'static str {
        WORKER
    }
    async fn run(&self, mut shutdown: broadcast::Receiver<()>) -> Result<(), BoxError> {
        loop {
            match approve_pending(&self.ctx, Utc::now()).await {
                Ok(r) if r != Report::default() => tracing::info!(?r, "CSR pass"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "CSRs not listed; trying again"),
            }
            tokio::select! {
                _ = shutdown.recv() => return Ok(()),
                _ = self.ctx.cluster.csr_change(RESYNC) => {}
            }
        }
    }
    async fn run_once(&self, now: DateTime<Utc>) -> Option<Result<serde_json::Value, BoxError>> {
        let report = approve_pending(&self.ctx, now).await;
        Some(report.map_err(BoxError::from).map(|r| serde_json::json!(r)))
    }
}

/// The approver's context from the process's backends.
pub async fn context(b: &Backends) -> Result<Context, BackendError> {
    Ok(Context {
        store: b.store().await?,
        cluster: b.cluster().await?,
    })
}

/// The worker, for the entry points.
pub async fn worker(b: Backends) -> Result<Worker, BackendError> {
    Ok(Worker::Service(Arc::new(CsrApprover {
        ctx: Arc::new(context(&b).await?),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(user: &str, created_s: i64, name: &str) -> Csr {
        Csr {
            name: name.into(),
            username: user.into(),
            created_s,
            ..Default::default()
        }
    }

    /// A flood from one requester delays only its own requests: each pass takes the oldest few
    /// of every requester.
    #[test]
    fn a_pass_takes_the_oldest_few_of_each_requester() {
        let mut all: Vec<Csr> = (0..500).map(|i| csr("system:bootstrap:flood1", i, &format!("a-{i:04}"))).collect();
        all.push(csr("system:bootstrap:honest", 900, "node-csr-honest"));
        all.push(csr("system:bootstrap:honest", 901, "node-csr-honest-2"));
        let pass = this_pass(all);
        let names: Vec<&str> = pass.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a-0000", "a-0001", "a-0002", "node-csr-honest", "node-csr-honest-2"]);
    }
}
