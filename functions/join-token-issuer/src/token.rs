//! The provider's one live token: the recorded one when its sealed join can be sent again, else
//! a new one in place of the old — whose Secret is deleted first — each id reserved for the
//! provider (`token#<id>`) before its Secret is created. Never reads a Secret.

use chrono::{DateTime, Utc};
use worldland_core::cluster::bootstrap::join_command;
use worldland_core::cluster::{BootstrapToken, Created};
use worldland_core::messages::SealedJoin;
use worldland_core::provider::tokens::{self, IdClaim};
use worldland_core::provider::{record_token_created, replace_token, reserve_token, ProviderRecord};
use worldland_core::sealed::seal_join;
use worldland_core::worker::Failure;

use super::{Context, Discovery, MAX_TOKEN_DRAWS};

/// How the answer carries the token.
pub(crate) enum Join {
    /// A sealed box to the provider's `enc_pubkey` (base64).
    Sealed(String),
    /// In the clear, for old agents that sent no key.
    Clear { token: String, command: String },
}

/// A token the provider joins with.
pub(crate) struct Issued {
    pub token_id: String,
    pub expires_at: DateTime<Utc>,
    pub join: Join,
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
    /// Reserve a fresh id in place of `old`. `delete_old`: `old`'s Secret may exist and is ours
    /// (created, or a create whose success was lost), so it is deleted first — a provider never
    /// holds two live tokens. A Secret that is not ours (409 on an id reserved just now) is left.
    Replace { old: String, delete_old: bool },
}

/// The token to create next: the reserved one, or a fresh id reserved (or replacing the old one)
/// on the provider's item first, so a crash between this and the create leaves a record of it.
async fn draw(next: Next, rec: &ProviderRecord, description: &str, ctx: &Context, now: DateTime<Utc>) -> Result<BootstrapToken, Failure> {
    let store = ctx.store.as_ref();
    let fresh = || BootstrapToken::generate(now + ctx.token_ttl, description.to_string());
    Ok(match next {
        Next::Create(token) => token,
        Next::Reserve => {
            let fresh = fresh();
            if !reserve_token(&fresh.id, fresh.expires_at, now)
                .apply(store, &rec.provider_id)
                .await?
            {
                // Another delivery reserved one in between: retry and use that one.
                return Err(Failure::retry("token reservation raced; retrying with the stored one"));
            }
            fresh
        }
        Next::Replace { old, delete_old } => {
            if delete_old {
                // Deleting one that is already gone is fine; a failure retries the message, the
                // reservation unchanged, so the old Secret is never left behind a new one.
                ctx.cluster.delete_bootstrap_token(&old).await?;
                tracing::info!(token_id = %old, "deleted the provider's previous token");
            }
            let fresh = fresh();
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

/// Where a token starts from.
enum Start {
    /// The recorded token: this registration can be sent its sealed join again.
    Reuse(Issued),
    /// The first step towards a new one.
    Draw(Next),
}

fn start(rec: &ProviderRecord, enc_pubkey: Option<&str>, description: &str, now: DateTime<Utc>) -> Start {
    let reserved = match (&rec.token_id, rec.token_expires_at) {
        (Some(id), Some(exp)) if exp > now => Some((id.clone(), exp)),
        _ => None,
    };
    match reserved {
        Some((id, exp)) if rec.token_created.as_deref() == Some(id.as_str()) => {
            match (&rec.sealed_join, rec.sealed_to.as_deref(), enc_pubkey) {
                (Some(sealed), Some(to), Some(key)) if to == key => Start::Reuse(Issued {
                    token_id: id,
                    expires_at: exp,
                    join: Join::Sealed(sealed.clone()),
                }),
                // Created, but this registration cannot be sent its secret again.
                _ => Start::Draw(Next::Replace { old: id, delete_old: true }),
            }
        }
        Some((id, exp)) => Start::Draw(Next::Create(BootstrapToken::with_id(&id, exp, description.to_string()))),
        None => Start::Draw(Next::Reserve),
    }
}

/// The provider's one token: the recorded one when its sealed join can be sent again, else a
/// created one — the reserved id, or a new id after each 409 — recorded before it is answered.
pub(crate) async fn token_for(
    rec: &ProviderRecord,
    enc_pubkey: Option<&str>,
    d: &Discovery,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Issued, Failure> {
    let store = ctx.store.as_ref();
    let description = format!("WorldLand join token for provider {}", rec.provider_id);
    let mut next = match start(rec, enc_pubkey, &description, now) {
        Start::Draw(next) => next,
        Start::Reuse(issued) => return Ok(issued),
    };
    for _ in 0..MAX_TOKEN_DRAWS {
        let token = draw(next, rec, &description, ctx, now).await?;
        // The id's owner is on record before its Secret exists: the CSR approver learns from it
        // which provider a bootstrap token belongs to.
        let claim = tokens::claim(store, &token.id, &rec.provider_id, now).await?;
        if claim == IdClaim::Others {
            tracing::warn!(token_id = %token.id, "token id reserved for another provider: drawing a new id");
            next = Next::Replace {
                old: token.id,
                delete_old: false,
            };
            continue;
        }
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
                // Reserved for us before this attempt: our own earlier create whose success was
                // lost, whose secret nobody was sent — deleted. Reserved just now: not ours — left.
                let ours = claim == IdClaim::Ours;
                tracing::warn!(token_id = %token.id, ours, "a Secret for this token id already exists: drawing a new id");
                next = Next::Replace {
                    old: token.id,
                    delete_old: ours,
                };
            }
        }
    }
    Err(Failure::retry(format!("{MAX_TOKEN_DRAWS} token ids in a row already existed")))
}
