//! Join-token issuer: creates a kubeadm bootstrap token through the Kubernetes API, answers the
//! provider with its join command (sealed to its key when it gave one), then moves it
//! `pending → approved`. A redelivered message mints no second token: the token id is reserved
//! on the provider item before the Secret is created, and a retry picks the same one up again.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tracing::instrument;
use worldland_core::cluster::bootstrap::{ca_cert_hash, endpoint_host_port, join_command};
use worldland_core::cluster::{BootstrapToken, Cluster, Created};
use worldland_core::labels::provider_node_labels;
use worldland_core::messages::{ProviderResponse, ProviderState, ProviderValidated, SealedJoin};
use worldland_core::replies::ProviderReplies;
use worldland_core::sealed::seal_join;
use worldland_core::state::providers::{approve, mark_answered, reserve_token, ProviderRecord};
use worldland_core::state::ItemStore;
use worldland_core::validation::Reason;
use worldland_core::worker::{decode, Failure, Handler};
use worldland_runtime::backends::{self, BackendError};
use worldland_runtime::worker::Worker;
use worldland_runtime::Config;

/// The routing keys this worker consumes.
pub const BINDINGS: &[&str] = worldland_core::bus::routes::JOIN_TOKEN_ISSUER.1;
pub const WORKER: &str = worldland_core::bus::routes::JOIN_TOKEN_ISSUER.0;

pub struct Context {
    pub store: Arc<dyn ItemStore>,
    pub cluster: Arc<dyn Cluster>,
    pub replies: Arc<dyn ProviderReplies>,
    pub token_ttl: Duration,
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

/// Finds or creates the provider's one token: the reserved id if it is still valid, else a new
/// reservation.
async fn token_for(rec: &ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<BootstrapToken, Failure> {
    let description = format!("WorldLand join token for provider {}", rec.provider_id);
    let token = match (&rec.token_id, rec.token_expires_at) {
        (Some(id), Some(exp)) if exp > now => BootstrapToken::with_id(id, exp, description),
        _ => {
            let fresh = BootstrapToken::generate(now + ctx.token_ttl, description);
            reserve_token(&fresh.id, fresh.expires_at, now)
                .run(ctx.store.as_ref(), &rec.provider_id)
                .await?
                // Another delivery reserved one in between: retry and use that one.
                .ok_or_else(|| Failure::retry("token reservation raced; retrying with the stored one"))?;
            fresh
        }
    };
    match ctx.cluster.create_bootstrap_token(&token).await? {
        Created::New => Ok(token),
        Created::AlreadyExists => ctx
            .cluster
            .get_bootstrap_token(&token.id)
            .await?
            .ok_or_else(|| Failure::retry("token Secret vanished after AlreadyExists")),
    }
}

async fn approval_answer(
    rec: &ProviderRecord,
    token: &BootstrapToken,
    enc_pubkey: Option<&str>,
    ctx: &Context,
) -> Result<ProviderResponse, Failure> {
    let info = ctx.cluster.cluster_info().await?;
    let ca_hash = ca_cert_hash(&info.ca_cert).map_err(Failure::retry)?;
    let server = ctx.api_endpoint.clone().unwrap_or(info.server);
    let (host, port) = endpoint_host_port(&server);
    let command = join_command(&host, port, &token.token(), &ca_hash);
    let spec: worldland_core::messages::Spec = serde_json::from_str(&rec.spec_json).map_err(Failure::retry)?;
    let first_gpu = spec.gpus.first().map(|g| g.name.as_str()).unwrap_or_default();
    let mut answer = ProviderResponse {
        success: true,
        status: ProviderState::Approved.to_string(),
        message: format!("approved; join token valid until {}", token.expires_at.to_rfc3339()),
        master_ip: Some(host),
        master_port: Some(port),
        ca_hash: Some(ca_hash),
        node_name: Some(rec.node_name.clone()),
        labels: Some(provider_node_labels(&rec.provider_id, first_gpu, rec.gpu_count as u32)),
        ..Default::default()
    };
    match enc_pubkey {
        Some(key) => {
            let join = SealedJoin {
                join_token: token.token(),
                join_command: command,
            };
            answer.sealed_join = Some(seal_join(&join, key).map_err(Failure::retry)?);
        }
        None => {
            answer.join_token = Some(token.token());
            answer.join_command = Some(command);
        }
    }
    Ok(answer)
}

async fn issue(msg: &ProviderValidated, rec: ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    let token = token_for(&rec, ctx, now).await?;
    let answer = approval_answer(&rec, &token, msg.enc_pubkey.as_deref(), ctx).await?;
    // Answer first, then approve: a crash in between answers again on redelivery (same token),
    // where the reverse order could approve a provider that never got its command.
    ctx.replies.reply(&rec.provider_id, &answer).await?;
    let approved = approve(&token.id, &msg.registration_id, token.expires_at, now)
        .run(ctx.store.as_ref(), &rec.provider_id)
        .await?;
    if approved.is_some() {
        tracing::info!(token_id = %token.id, "provider approved");
        return Ok(());
    }
    match ProviderRecord::load(ctx.store.as_ref(), &rec.provider_id).await? {
        // A concurrent delivery approved it with this same token.
        Some(now_rec) if now_rec.state == ProviderState::Approved && now_rec.token_id.as_deref() == Some(token.id.as_str()) => Ok(()),
        _ => Err(Failure::retry("approval condition failed")),
    }
}

/// A new registration from an approved provider that has not joined yet (its agent restarted):
/// answer again with the same token, read back from the cluster.
async fn reanswer_approved(msg: &ProviderValidated, rec: ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    let token = match &rec.token_id {
        Some(id) => ctx.cluster.get_bootstrap_token(id).await?.filter(|t| t.expires_at > now),
        None => None,
    };
    let answer = match token {
        Some(token) => approval_answer(&rec, &token, msg.enc_pubkey.as_deref(), ctx).await?,
        None => ProviderResponse {
            success: false,
            status: ProviderState::Approved.to_string(),
            message: "the join token has expired; register again once this provider shows as expired".into(),
            ..Default::default()
        },
    };
    answer_then_mark(msg, &answer, ctx, now).await
}

pub struct JoinTokenIssuer(pub Context);

#[async_trait]
impl Handler for JoinTokenIssuer {
    fn name(&self) -> &'static str {
        WORKER
    }
    fn bindings(&self) -> &'static [&'static str] {
        BINDINGS
    }
    async fn handle(&self, _routing_key: &str, body: &[u8], now: DateTime<Utc>) -> Result<(), Failure> {
        handle(&decode::<ProviderValidated>(body, "a provider.validated message")?, &self.0, now).await
    }
}

/// The handler built from configuration, its clients made once per process (container or Lambda
/// cold start), never inside the handler.
pub async fn from_config(cfg: &Config) -> Result<JoinTokenIssuer, BackendError> {
    Ok(JoinTokenIssuer(Context {
        store: backends::store(cfg).await,
        cluster: backends::cluster(cfg).await?,
        replies: backends::replies(cfg).await?,
        token_ttl: chrono::Duration::seconds(cfg.token_ttl_s),
        api_endpoint: cfg.api_endpoint.clone(),
    }))
}

/// The worker, for the container and Lambda entry points.
pub async fn worker(cfg: Config, _bus: Arc<dyn worldland_core::bus::Bus>) -> Result<Worker, BackendError> {
    Ok(Worker::Consumer(Arc::new(from_config(&cfg).await?)))
}
