//! Join-token issuer: reserves the provider's node name, creates a kubeadm bootstrap token
//! through the Kubernetes API, answers the provider with its join command (sealed to its key
//! when it gave one), then moves it `pending → approved`.
//!
//! **A node belongs to one provider.** The node name assigned at registration
//! ([`worldland_core::validation::node_name`]) is reserved for the provider by a conditional
//! create of its own item ([`worldland_core::provider::nodes`]) before any token exists; a name
//! another provider holds is refused (`node_name_taken`), answered to the provider, and nothing is
//! approved. The answer names the node (`node_name`) and the command joins with
//! `--node-name`.
//!
//! **Tokens, without reading a Secret back** (the issuer may create and delete Secrets, never
//! get them): the token id is reserved on the provider item before its Secret is created, and
//! on its own item (`token#<id>` → the provider, [`worldland_core::provider::tokens`]), where
//! the CSR approver learns whose a bootstrap token is; the create's success is recorded on the
//! provider item right after it (`token_created`, with the answer's sealed join — ciphertext
//! only the provider can open). A redelivery of a registration that sent `enc_pubkey` therefore
//! finds its own token and answers with it again without creating or reading anything: once
//! recorded, no second token is minted for it. A create that meets 409 on an id reserved for
//! this provider before this attempt is our own earlier create whose success was lost: it is
//! deleted and a new id drawn; on an id reserved just now (a Secret that is not ours) a new id
//! is drawn and the Secret left alone.
//!
//! **One live token per provider.** A recorded token whose secret cannot be sent again (an old
//! agent without `enc_pubkey`: the broker never stores a token in the clear; or a new
//! registration with another key) is replaced: its Secret is deleted first, then a new id is
//! reserved in its place.
//!
//! **A few per wallet.** Before any token, the provider takes one of its wallet's
//! `max_pending_per_wallet` slots ([`worldland_core::provider::wallets`]): a wallet whose other
//! providers already hold that many live tokens without having joined is refused
//! (`too_many_pending_joins`), answered like any refusal, and no token is created.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tracing::instrument;
use worldland_core::bus::routes::ToJoinTokenIssuer;
use worldland_core::cluster::bootstrap::{ca_cert_hash, endpoint_host_port};
use worldland_core::cluster::Cluster;
use worldland_core::labels::provider_node_labels;
use worldland_core::messages::{ProviderResponse, ProviderState, ProviderValidated};
use worldland_core::provider::nodes::{self, Claim};
use worldland_core::provider::wallets::{self, Slot};
use worldland_core::provider::{approve, mark_answered, ProviderRecord};
use worldland_core::refusal::{Reason, Rejection};
use worldland_core::replies::ProviderReplies;
use worldland_core::state::ItemStore;
use worldland_core::worker::{Consume, Failure};
use worldland_runtime::backends::BackendError;
use worldland_runtime::worker::Worker;
use worldland_runtime::Backends;

mod token;
use token::{token_for, Issued, Join};

/// The routing keys this worker consumes.
pub const BINDINGS: &[&str] = worldland_core::bus::routes::JOIN_TOKEN_ISSUER.1;
pub const WORKER: &str = worldland_core::bus::routes::JOIN_TOKEN_ISSUER.0;

/// Token ids drawn for one message before it is retried: each draw after the first follows a
/// 409, and 36^6 ids make even one collision rare.
pub const MAX_TOKEN_DRAWS: usize = 5;

pub struct Context {
    pub store: Arc<dyn ItemStore>,
    pub cluster: Arc<dyn Cluster>,
    pub replies: Arc<dyn ProviderReplies>,
    pub token_ttl: Duration,
    /// At most this many of one wallet's providers hold a live token without having joined.
    pub max_pending_per_wallet: usize,
    /// Overrides the API server address from cluster-info.
    pub api_endpoint: Option<String>,
}

#[instrument(skip(msg, ctx, now), fields(provider_id = %msg.provider_id, registration = %msg.registration_id))]
pub async fn handle(msg: &ProviderValidated, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    let rec = ProviderRecord::load(ctx.store.as_ref(), &msg.provider_id)
        .await?
        .ok_or_else(|| Failure::refuse(Reason::UnknownProvider, "no such provider"))?;
    if rec.answered_registration.as_deref() == Some(msg.registration_id.as_str()) {
        return Ok(()); // a duplicate: this registration was answered already
    }
    match rec.state {
        ProviderState::Pending => issue(msg, rec, ctx, now).await,
        ProviderState::Approved => reanswer_approved(msg, rec, ctx, now).await,
        ProviderState::Joined | ProviderState::Available | ProviderState::Busy | ProviderState::Offline => {
            let answer = ProviderResponse {
                success: true,
                status: rec.state.to_string(),
                message: "this provider has already joined the cluster".into(),
                node_name: Some(rec.node_name.clone()),
                ..Default::default()
            };
            answer_then_mark(msg, &answer, ctx, now).await
        }
        // A stale message about a registration that has since expired or been refused.
        ProviderState::Rejected | ProviderState::Expired => Ok(()),
    }
}

async fn answer_then_mark(msg: &ProviderValidated, answer: &ProviderResponse, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    ctx.replies.reply(&msg.provider_id, answer).await?;
    mark_answered(&msg.registration_id, now)
        .run(ctx.store.as_ref(), &msg.provider_id)
        .await?;
    Ok(())
}

/// The provider's node name must be its own: reserved for it now, or already. One that another
/// provider holds is refused, and the provider is told (its registration was verified and stored
/// under its wallet, so it owns its id); the other provider is not named.
async fn own_node_name(rec: &ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    match nodes::claim(ctx.store.as_ref(), &rec.node_name, &rec.provider_id, now).await? {
        Claim::Ours => Ok(()),
        Claim::TakenBy(owner) => {
            tracing::warn!(node = %rec.node_name, %owner, "node name reserved by another provider; not approved");
            let r = Rejection::new(
                Reason::NodeNameTaken,
                format!("node name {} is reserved by another provider", rec.node_name),
            );
            refuse(rec, r, ctx).await
        }
    }
}

/// Answers the provider with the refusal, and refuses the message.
async fn refuse(rec: &ProviderRecord, r: Rejection, ctx: &Context) -> Result<(), Failure> {
    let answer = ProviderResponse::rejected(format!("{}: {}", r.reason.code(), r.message));
    ctx.replies.reply(&rec.provider_id, &answer).await?;
    Err(r.into())
}

/// The provider must hold one of its wallet's slots before it is given a token: taken now, or
/// already (a replay). A wallet whose other providers hold every slot is refused; the others are
/// not named.
async fn own_wallet_slot(rec: &ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    let limit = ctx.max_pending_per_wallet;
    let until = now + ctx.token_ttl;
    match wallets::take_slot(ctx.store.as_ref(), &rec.wallet, &rec.provider_id, until, limit, now).await? {
        Slot::Ours => Ok(()),
        Slot::Full => {
            tracing::warn!(wallet = %rec.wallet, limit, "wallet at its limit of pending joins; no token");
            let r = Rejection::new(
                Reason::TooManyPendingJoins,
                format!(
                    "this wallet already has {limit} providers holding a live join token that have not joined; \
                     register again once one of them joins or its token expires"
                ),
            );
            refuse(rec, r, ctx).await
        }
    }
}

/// What a joining node needs to find and trust the API server.
pub(crate) struct Discovery {
    host: String,
    port: u16,
    ca_hash: String,
}

async fn discovery(ctx: &Context) -> Result<Discovery, Failure> {
    let info = ctx.cluster.cluster_info().await?;
    let ca_hash = ca_cert_hash(&info.ca_cert).map_err(Failure::retry)?;
    let server = ctx.api_endpoint.clone().unwrap_or(info.server);
    let (host, port) = endpoint_host_port(&server);
    Ok(Discovery { host, port, ca_hash })
}

fn approval_answer(rec: &ProviderRecord, issued: &Issued, d: &Discovery) -> Result<ProviderResponse, Failure> {
    let spec: worldland_core::messages::Spec = serde_json::from_str(&rec.spec_json).map_err(Failure::retry)?;
    let first_gpu = spec.gpus.first().map(|g| g.name.as_str()).unwrap_or_default();
    let mut answer = ProviderResponse {
        success: true,
        status: ProviderState::Approved.to_string(),
        message: format!(
            "approved; join token valid until {}; join as node {}",
            issued.expires_at.to_rfc3339(),
            rec.node_name
        ),
        master_ip: Some(d.host.clone()),
        master_port: Some(d.port),
        ca_hash: Some(d.ca_hash.clone()),
        node_name: Some(rec.node_name.clone()),
        labels: Some(provider_node_labels(&rec.provider_id, first_gpu, rec.gpu_count as u32)),
        ..Default::default()
    };
    match &issued.join {
        Join::Sealed(sealed) => answer.sealed_join = Some(sealed.clone()),
        Join::Clear { token, command } => {
            answer.join_token = Some(token.clone());
            answer.join_command = Some(command.clone());
        }
    }
    Ok(answer)
}

async fn issue(msg: &ProviderValidated, rec: ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    own_node_name(&rec, ctx, now).await?;
    own_wallet_slot(&rec, ctx, now).await?;
    let d = discovery(ctx).await?;
    let issued = token_for(&rec, msg.enc_pubkey.as_deref(), &d, ctx, now).await?;
    let answer = approval_answer(&rec, &issued, &d)?;
    // Answer first, then approve: a crash in between answers again on redelivery (same token),
    // where the reverse order could approve a provider that never got its command.
    ctx.replies.reply(&rec.provider_id, &answer).await?;
    let approved = approve(&issued.token_id, &msg.registration_id, issued.expires_at, now)
        .run(ctx.store.as_ref(), &rec.provider_id)
        .await?;
    if approved.is_some() {
        tracing::info!(token_id = %issued.token_id, node = %rec.node_name, "provider approved");
        return Ok(());
    }
    match ProviderRecord::load(ctx.store.as_ref(), &rec.provider_id).await? {
        // A concurrent delivery approved it with this same token.
        Some(now_rec) if now_rec.state == ProviderState::Approved && now_rec.token_id.as_deref() == Some(issued.token_id.as_str()) => {
            Ok(())
        }
        _ => Err(Failure::retry("approval condition failed")),
    }
}

/// A new registration from an approved provider that has not joined yet (its agent restarted):
/// answer again with its token — the stored sealed join when this registration's key opens it,
/// else a new token in place of the old one, whose Secret is deleted first — never read back
/// from the cluster. It keeps its wallet slot (or takes one, if it holds none).
async fn reanswer_approved(msg: &ProviderValidated, rec: ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    let valid = rec.token_id.is_some() && rec.token_expires_at.is_some_and(|exp| exp > now);
    let answer = if valid {
        own_node_name(&rec, ctx, now).await?;
        own_wallet_slot(&rec, ctx, now).await?;
        let d = discovery(ctx).await?;
        let issued = token_for(&rec, msg.enc_pubkey.as_deref(), &d, ctx, now).await?;
        approval_answer(&rec, &issued, &d)?
    } else {
        ProviderResponse {
            success: false,
            status: ProviderState::Approved.to_string(),
            message: "the join token has expired; register again once this provider shows as expired".into(),
            ..Default::default()
        }
    };
    answer_then_mark(msg, &answer, ctx, now).await
}

pub struct JoinTokenIssuer(pub Context);

#[async_trait]
impl Consume for JoinTokenIssuer {
    type Inbound = ToJoinTokenIssuer;
    async fn consume(&self, msg: ToJoinTokenIssuer, now: DateTime<Utc>) -> Result<(), Failure> {
        let ToJoinTokenIssuer::Validated(validated) = msg;
        handle(&validated, &self.0, now).await
    }
}

/// The issuer's context from the process's backends: the one wiring its container, its Lambda,
/// `worldland up` and the demo share (clients made once per process, never in the handler).
pub async fn context(b: &Backends) -> Result<Context, BackendError> {
    let cfg = b.config();
    Ok(Context {
        store: b.store().await?,
        cluster: b.cluster().await?,
        replies: b.replies().await?,
        token_ttl: chrono::Duration::seconds(cfg.token_ttl_s),
        max_pending_per_wallet: cfg.max_pending_joins_per_wallet,
        api_endpoint: cfg.api_endpoint.clone(),
    })
}

/// The worker, for the entry points.
pub async fn worker(b: Backends) -> Result<Worker, BackendError> {
    Ok(Worker::consumer(JoinTokenIssuer(context(&b).await?)))
}
