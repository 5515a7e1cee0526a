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
use worldland_core::validation::{Reason, Rejection};
use worldland_core::worker::{decode, Handler, Outcome};

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

fn retry(e: impl std::fmt::Display) -> Outcome {
    Outcome::Retry(e.to_string())
}

#[instrument(skip(msg, ctx, now), fields(provider_id = %msg.provider_id, registration = %msg.registration_id))]
pub async fn handle(msg: &ProviderValidated, ctx: &Context, now: DateTime<Utc>) -> Outcome {
    let rec = match ProviderRecord::load(ctx.store.as_ref(), &msg.provider_id).await {
        Ok(Some(rec)) => rec,
        Ok(None) => return Outcome::Rejected(Rejection::new(Reason::UnknownProvider, "no such provider")),
        Err(e) => return retry(e),
    };
    if rec.answered_registration.as_deref() == Some(msg.registration_id.as_str()) {
        return Outcome::Done; // a duplicate: this registration was answered already
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
        ProviderState::Rejected | ProviderState::Expired => Outcome::Done,
    }
}

async fn answer_then_mark(msg: &ProviderValidated, answer: &ProviderResponse, ctx: &Context, now: DateTime<Utc>) -> Outcome {
    if let Err(e) = ctx.replies.reply(&msg.provider_id, answer).await {
        return retry(e);
    }
    match mark_answered(&msg.registration_id, now)
        .run(ctx.store.as_ref(), &msg.provider_id)
        .await
    {
        Ok(_) => Outcome::Done,
        Err(e) => retry(e),
    }
}

/// Finds or creates the provider's one token: the reserved id if it is still valid, else a new
/// reservation.
async fn token_for(rec: &ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<BootstrapToken, Outcome> {
    let description = format!("WorldLand join token for provider {}", rec.provider_id);
    let token = match (&rec.token_id, rec.token_expires_at) {
        (Some(id), Some(exp)) if exp > now => BootstrapToken::with_id(id, exp, description),
        _ => {
            let fresh = BootstrapToken::generate(now + ctx.token_ttl, description);
            match reserve_token(&fresh.id, fresh.expires_at, now)
                .run(ctx.store.as_ref(), &rec.provider_id)
                .await
            {
                Ok(Some(_)) => fresh,
                // Another delivery reserved one in between: retry and use that one.
                Ok(None) => return Err(retry("token reservation raced; retrying with the stored one")),
                Err(e) => return Err(retry(e)),
            }
        }
    };
    match ctx.cluster.create_bootstrap_token(&token).await {
        Ok(Created::New) => Ok(token),
        Ok(Created::AlreadyExists) => match ctx.cluster.get_bootstrap_token(&token.id).await {
            Ok(Some(existing)) => Ok(existing),
            Ok(None) => Err(retry("token Secret vanished after AlreadyExists")),
            Err(e) => Err(retry(e)),
        },
        Err(e) => Err(retry(e)),
    }
}

async fn approval_answer(
    rec: &ProviderRecord,
    token: &BootstrapToken,
    enc_pubkey: Option<&str>,
    ctx: &Context,
) -> Result<ProviderResponse, Outcome> {
    let info = ctx.cluster.cluster_info().await.map_err(retry)?;
    let ca_hash = ca_cert_hash(&info.ca_cert).map_err(retry)?;
    let server = ctx.api_endpoint.clone().unwrap_or(info.server);
    let (host, port) = endpoint_host_port(&server);
    let command = join_command(&host, port, &token.token(), &ca_hash);
    let spec: worldland_core::messages::Spec = serde_json::from_str(&rec.spec_json).map_err(retry)?;
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
            let sealed = seal_join(
                &SealedJoin {
                    join_token: token.token(),
                    join_command: command,
                },
                key,
            )
            .map_err(retry)?;
            answer.sealed_join = Some(sealed);
        }
        None => {
            answer.join_token = Some(token.token());
            answer.join_command = Some(command);
        }
    }
    Ok(answer)
}

async fn issue(msg: &ProviderValidated, rec: ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Outcome {
    let token = match token_for(&rec, ctx, now).await {
        Ok(t) => t,
        Err(outcome) => return outcome,
    };
    let answer = match approval_answer(&rec, &token, msg.enc_pubkey.as_deref(), ctx).await {
        Ok(a) => a,
        Err(outcome) => return outcome,
    };
    // Answer first, then approve: a crash in between answers again on redelivery (same token),
    // where the reverse order could approve a provider that never got its command.
    if let Err(e) = ctx.replies.reply(&rec.provider_id, &answer).await {
        return retry(e);
    }
    match approve(&token.id, &msg.registration_id, token.expires_at, now)
        .run(ctx.store.as_ref(), &rec.provider_id)
        .await
    {
        Ok(Some(_)) => {
            tracing::info!(token_id = %token.id, "provider approved");
            Outcome::Done
        }
        Ok(None) => match ProviderRecord::load(ctx.store.as_ref(), &rec.provider_id).await {
            // A concurrent delivery approved it with this same token.
            Ok(Some(now_rec)) if now_rec.state == ProviderState::Approved && now_rec.token_id.as_deref() == Some(token.id.as_str()) => {
                Outcome::Done
            }
            Ok(_) => retry("approval condition failed"),
            Err(e) => retry(e),
        },
        Err(e) => retry(e),
    }
}

/// A new registration from an approved provider that has not joined yet (its agent restarted):
/// answer again with the same token, read back from the cluster.
async fn reanswer_approved(msg: &ProviderValidated, rec: ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Outcome {
    let token = match &rec.token_id {
        Some(id) => match ctx.cluster.get_bootstrap_token(id).await {
            Ok(t) => t.filter(|t| t.expires_at > now),
            Err(e) => return retry(e),
        },
        None => None,
    };
    let answer = match token {
        Some(token) => match approval_answer(&rec, &token, msg.enc_pubkey.as_deref(), ctx).await {
            Ok(a) => a,
            Err(outcome) => return outcome,
        },
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
    async fn handle(&self, _routing_key: &str, body: &[u8], now: DateTime<Utc>) -> Outcome {
        match decode::<ProviderValidated>(body, "a provider.validated message") {
            Ok(msg) => handle(&msg, &self.0, now).await,
            Err(refused) => refused,
        }
    }
}

/// The worker built from configuration, its clients made once per process (container or Lambda
/// cold start), never inside the handler.
pub async fn from_config(cfg: &worldland_runtime::Config) -> Result<JoinTokenIssuer, worldland_runtime::backends::BackendError> {
    use worldland_runtime::backends;
    Ok(JoinTokenIssuer(Context {
        store: backends::store(cfg).await,
        cluster: backends::cluster(cfg).await?,
        replies: backends::replies(cfg).await?,
        token_ttl: chrono::Duration::seconds(cfg.token_ttl_s),
        api_endpoint: cfg.api_endpoint.clone(),
    }))
}
