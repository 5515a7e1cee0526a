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
//! **Tokens, without reading a Secret back** (the issuer may create Secrets, never get them):
//! the token id is reserved on the provider item before its Secret is created, and the create's
//! success is recorded on the item right after it (`token_created`, with the answer's sealed
//! join — ciphertext only the provider can open). A redelivery of a registration that sent
//! `enc_pubkey` therefore finds its own token and answers with it again without creating or
//! reading anything: once recorded, no second token is minted for it. A create of the reserved
//! id that meets 409 while no success is recorded for it is a collision with a token that is not
//! ours — or an earlier create of ours that crashed before it was recorded, whose secret nobody
//! was ever sent — so a new id is drawn and reserved in place of the old one, never a token read
//! back from the cluster. A recorded token whose secret cannot be sent again (an old agent
//! without `enc_pubkey`: the broker never stores a token in the clear; or a new registration
//! with another key) is replaced by a new one the same way; the old Secret is left to expire
//! (the controller manager's token cleaner removes expired bootstrap tokens).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tracing::instrument;
use worldland_core::bus::routes::ToJoinTokenIssuer;
use worldland_core::cluster::bootstrap::{ca_cert_hash, endpoint_host_port, join_command};
use worldland_core::cluster::{BootstrapToken, Cluster, Created};
use worldland_core::labels::provider_node_labels;
use worldland_core::messages::{ProviderResponse, ProviderState, ProviderValidated, SealedJoin};
use worldland_core::provider::nodes::{self, Claim};
use worldland_core::provider::{approve, mark_answered, record_token_created, replace_token, reserve_token, ProviderRecord};
use worldland_core::refusal::{Reason, Rejection};
use worldland_core::replies::ProviderReplies;
use worldland_core::sealed::seal_join;
use worldland_core::state::ItemStore;
use worldland_core::worker::{Consume, Failure};
use worldland_runtime::backends::BackendError;
use worldland_runtime::worker::Worker;
use worldland_runtime::Backends;

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
            let answer = ProviderResponse::rejected(format!("{}: {}", r.reason.code(), r.message));
            ctx.replies.reply(&rec.provider_id, &answer).await?;
            Err(r.into())
        }
    }
}

/// What a joining node needs to find and trust the API server.
struct Discovery {
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

/// How the answer carries the token.
enum Join {
    /// A sealed box to the provider's `enc_pubkey` (base64).
    Sealed(String),
    /// In the clear, for old agents that sent no key.
    Clear { token: String, command: String },
}

/// A token the provider joins with.
struct Issued {
    token_id: String,
    expires_at: DateTime<Utc>,
    join: Join,
}

/// The `kubeadm join` line, naming the node the broker assigned (old agents run this line; the
/// SDK builds the same argv from the answer's fields).
fn command_for(d: &Discovery, token: &str, node_name: &str) -> String {
    format!("{} --node-name {node_name}", join_command(&d.host, d.port, token, &d.ca_hash))
}

fn join_for(token: &BootstrapToken, d: &Discovery, node_name: &str, enc_pubkey: Option<&str>) -> Result<Join, Failure> {
    let command = command_for(d, &token.token(), node_name);
    Ok(match enc_pubkey {
        Some(key) => {
            let join = SealedJoin {
                join_token: token.token(),
                join_command: command,
            };
            Join::Sealed(seal_join(&join, key).map_err(Failure::retry)?)
        }
        None => Join::Clear {
            token: token.token(),
            command,
        },
    })
}

/// What the next attempt at a token does.
enum Next {
    /// Create the reserved (not yet created) id, with a fresh secret.
    Create(BootstrapToken),
    /// Reserve a fresh id: none is reserved, or the reservation expired.
    Reserve,
    /// Reserve a fresh id in place of this one (409, or a created token that cannot be re-sent).
    Replace(String),
}

/// The token to create next: the reserved one, or a fresh id reserved (or replacing the old one)
/// on the provider's item first, so a crash between this and the create leaves a record of it.
async fn draw(next: Next, rec: &ProviderRecord, description: &str, ctx: &Context, now: DateTime<Utc>) -> Result<BootstrapToken, Failure> {
    let store = ctx.store.as_ref();
    Ok(match next {
        Next::Create(token) => token,
        Next::Reserve => {
            let fresh = BootstrapToken::generate(now + ctx.token_ttl, description.to_string());
            if !reserve_token(&fresh.id, fresh.expires_at, now)
                .apply(store, &rec.provider_id)
                .await?
            {
                // Another delivery reserved one in between: retry and use that one.
                return Err(Failure::retry("token reservation raced; retrying with the stored one"));
            }
            fresh
        }
        Next::Replace(old) => {
            let fresh = BootstrapToken::generate(now + ctx.token_ttl, description.to_string());
            if !replace_token(&old, &fresh.id, fresh.expires_at, rec.state, now)
                .apply(store, &rec.provider_id)
                .await?
            {
                return Err(Failure::retry("token reservation changed under a replacement; retrying"));
            }
            fresh
        }
    })
}

/// The provider's one token: the recorded one when its sealed join can be sent again, else a
/// created one — the reserved id, or a new id after each 409 — recorded before it is answered.
/// Never reads a Secret.
async fn token_for(
    rec: &ProviderRecord,
    enc_pubkey: Option<&str>,
    d: &Discovery,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Issued, Failure> {
    let store = ctx.store.as_ref();
    let description = format!("WorldLand join token for provider {}", rec.provider_id);
    let reserved = match (&rec.token_id, rec.token_expires_at) {
        (Some(id), Some(exp)) if exp > now => Some((id.clone(), exp)),
        _ => None,
    };
    let mut next = match reserved {
        Some((id, exp)) if rec.token_created.as_deref() == Some(id.as_str()) => {
            match (&rec.sealed_join, rec.sealed_to.as_deref(), enc_pubkey) {
                (Some(sealed), Some(to), Some(key)) if to == key => {
                    return Ok(Issued {
                        token_id: id,
                        expires_at: exp,
                        join: Join::Sealed(sealed.clone()),
                    });
                }
                // Created, but this registration cannot be sent its secret again.
                _ => Next::Replace(id),
            }
        }
        Some((id, exp)) => Next::Create(BootstrapToken::with_id(&id, exp, description.clone())),
        None => Next::Reserve,
    };
    for _ in 0..MAX_TOKEN_DRAWS {
        let token = draw(next, rec, &description, ctx, now).await?;
        match ctx.cluster.create_bootstrap_token(&token).await? {
            Created::New => {
                let join = join_for(&token, d, &rec.node_name, enc_pubkey)?;
                let sealed = match &join {
                    Join::Sealed(b) => enc_pubkey.map(|key| (b.as_str(), key)),
                    Join::Clear { .. } => None,
                };
                if !record_token_created(&token.id, sealed, now).apply(store, &rec.provider_id).await? {
                    return Err(Failure::retry("token reservation changed under its create; retrying"));
                }
                return Ok(Issued {
                    token_id: token.id,
                    expires_at: token.expires_at,
                    join,
                });
            }
            Created::AlreadyExists => {
                tracing::warn!(
                    token_id = %token.id,
                    "a Secret for this token id already exists and no create of ours is recorded for it: drawing a new id"
                );
                next = Next::Replace(token.id);
            }
        }
    }
    Err(Failure::retry(format!("{MAX_TOKEN_DRAWS} token ids in a row already existed")))
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
/// else a new token in place of the old one — never read back from the cluster.
async fn reanswer_approved(msg: &ProviderValidated, rec: ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    let valid = rec.token_id.is_some() && rec.token_expires_at.is_some_and(|exp| exp > now);
    let answer = if valid {
        own_node_name(&rec, ctx, now).await?;
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
        api_endpoint: cfg.api_endpoint.clone(),
    })
}

/// The worker, for the entry points.
pub async fn worker(b: Backends) -> Result<Worker, BackendError> {
    Ok(Worker::consumer(JoinTokenIssuer(context(&b).await?)))
}
