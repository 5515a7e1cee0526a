//! Registration handler: validates a registration, checks its signature, and stores the provider
//! as `pending` with one conditional write; then emits `provider.validated`. A refusal is always
//! logged and dead-lettered with its reason code, and answered on `provider:response:<id>` only
//! when the sender is proven to own that id ([`proven_owner`]): anyone can write a registration
//! naming any id, and a waiting agent takes a `rejected` answer as final.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::instrument;
use worldland_core::bus::routes::ToRegistrationHandler;
use worldland_core::bus::{self, Bus, RegistrationReceived};
use worldland_core::messages::{ProviderResponse, ProviderValidated, Registration, StreamEnvelope, MAX_ENTRY_BYTES};
use worldland_core::provider::{attr, register_pending, specs, ProviderRecord};
use worldland_core::refusal::{Reason, Rejection};
use worldland_core::replies::ProviderReplies;
use worldland_core::signature::{recover_personal, verify_entry, SignaturePolicy};
use worldland_core::state::{ItemStore, Table, Value};
use worldland_core::validation::{check_provider_id, validate_registration, ValidationPolicy};
use worldland_core::worker::{Consume, Failure};
use worldland_runtime::backends::BackendError;
use worldland_runtime::worker::Worker;
use worldland_runtime::Backends;

/// The routing keys this worker consumes.
pub const BINDINGS: &[&str] = worldland_core::bus::routes::REGISTRATION_HANDLER.1;
pub const WORKER: &str = worldland_core::bus::routes::REGISTRATION_HANDLER.0;

pub struct Context {
    pub store: Arc<dyn ItemStore>,
    pub bus: Arc<dyn Bus>,
    pub replies: Arc<dyn ProviderReplies>,
    pub policy: ValidationPolicy,
    pub signatures: SignaturePolicy,
}

/// The provider id and wallet a registration claims, read leniently (it may not parse as a
/// registration at all); `None` unless both are there and the id is canonical.
fn claimed_sender(data: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    let id = v.get("provider_id")?.as_str()?.to_string();
    check_provider_id(&id).ok()?;
    let wallet = v.get("wallet_addr")?.as_str()?.to_string();
    Some((id, wallet))
}

/// The provider id whose response stream may carry this entry's refusal: only one whose owner
/// the sender is proven to be. Proof is either
/// - a signature over `data` that recovers to the claimed `wallet_addr` (under either policy),
///   for an id that is not registered to another wallet; or
/// - under policy `optional`, for an unsigned entry only: a stored provider with that id whose
///   wallet is the claimed one.
///
/// Anything else proves nothing — a forged, wrong, malformed or (under `required`) missing
/// signature, an id registered to another wallet, an unsigned claim on an id nobody owns, data
/// naming no valid id or wallet — and then nobody is answered: the refusal is only logged and
/// dead-lettered with its reason.
pub async fn proven_owner(env: &StreamEnvelope, signatures: SignaturePolicy, store: &dyn ItemStore) -> Result<Option<String>, Failure> {
    let Some((id, wallet)) = claimed_sender(&env.data) else {
        return Ok(None);
    };
    let signed = match env.signature.as_deref() {
        None | Some("") if signatures == SignaturePolicy::Optional => false,
        None | Some("") => return Ok(None),
        Some(sig) => match recover_personal(env.data.as_bytes(), sig) {
            Ok(signer) if signer.eq_ignore_ascii_case(&wallet) => true,
            _ => return Ok(None),
        },
    };
    let stored = store.get(Table::Providers, &id).await?;
    Ok(match stored {
        Some(item) => item
            .get(attr::WALLET)
            .and_then(Value::as_str)
            .is_some_and(|owner| owner.eq_ignore_ascii_case(&wallet))
            .then_some(id),
        None => signed.then_some(id),
    })
}

/// Validates and signature-checks a registration; pure.
pub fn check(env: &StreamEnvelope, ctx: &Context, now: DateTime<Utc>) -> Result<Registration, Rejection> {
    let size = env.data.len() + env.signature.as_ref().map_or(0, String::len);
    if size > MAX_ENTRY_BYTES {
        return Err(Rejection::new(
            Reason::EntryTooLarge,
            format!("entry is {size} bytes; the limit is {MAX_ENTRY_BYTES}"),
        ));
    }
    let reg: Registration = serde_json::from_str(&env.data).map_err(|e| {
        Rejection::new(
            Reason::MalformedJson,
            format!("registration does not match the agents' format: {e}"),
        )
    })?;
    validate_registration(&reg, &ctx.policy, now)?;
    verify_entry(env.data.as_bytes(), env.signature.as_deref(), &reg.wallet_addr, ctx.signatures)?;
    Ok(reg)
}

#[instrument(skip(env, ctx, now), fields(entry = %env.entry_id))]
pub async fn handle(env: &StreamEnvelope, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    let reg = match check(env, ctx, now) {
        Ok(reg) => reg,
        Err(rejection) => return refuse(env, rejection, ctx).await,
    };
    let id = reg.provider_id.clone();
    let written = register_pending(&reg, &env.entry_id, now).run(ctx.store.as_ref(), &id).await?;
    let mut stored_this_one = written.is_some();
    if written.is_none() {
        // The condition failed: find out why.
        let current = ProviderRecord::load(ctx.store.as_ref(), &id)
            .await?
            .ok_or_else(|| Failure::retry("provider vanished between write and read"))?;
        if !current.wallet.eq_ignore_ascii_case(&reg.wallet_addr) {
            // Someone else's provider id: refuse, and do not write on its owner's response stream.
            let r = Rejection::new(Reason::WalletMismatch, "provider_id is registered to another wallet");
            tracing::warn!(provider_id = %id, "refusal not answered: the id is registered to another wallet");
            return Err(r.into());
        }
        tracing::info!(provider_id = %id, state = %current.state, "registration already recorded; passing it on");
        stored_this_one = current.registration_id == env.entry_id;
    }
    if stored_this_one {
        // The spec as registered, once, in its own item (the provider's keeps the working copy):
        // a redelivery after a crash here writes it then.
        specs::store_registered(&reg.spec, &env.entry_id, now)
            .run_raw(ctx.store.as_ref(), &specs::key(&id))
            .await?;
    }
    let validated = ProviderValidated {
        provider_id: id.clone(),
        registration_id: env.entry_id.clone(),
        enc_pubkey: reg.enc_pubkey.clone(),
    };
    bus::publish(ctx.bus.as_ref(), &format!("validated/{}", env.entry_id), &validated).await?;
    Ok(())
}

/// Answers a refusal on the provider's response stream when the sender is proven to own the id
/// ([`proven_owner`]), then refuses (dead letter with the reason) either way.
async fn refuse(env: &StreamEnvelope, rejection: Rejection, ctx: &Context) -> Result<(), Failure> {
    match proven_owner(env, ctx.signatures, ctx.store.as_ref()).await? {
        Some(id) => {
            let answer = ProviderResponse::rejected(format!("{}: {}", rejection.reason.code(), rejection.message));
            ctx.replies.reply(&id, &answer).await?;
        }
        None => tracing::warn!(
            reason = rejection.reason.code(),
            "refusal not answered: the sender is not proven to own the provider id it names"
        ),
    }
    Err(rejection.into())
}

/// The transport adapters' entry point: decodes the bus body, then [`handle`].
pub struct RegistrationHandler(pub Context);

#[async_trait]
impl Consume for RegistrationHandler {
    type Inbound = ToRegistrationHandler;
    async fn consume(&self, msg: ToRegistrationHandler, now: DateTime<Utc>) -> Result<(), Failure> {
        let ToRegistrationHandler::Received(RegistrationReceived(env)) = msg;
        handle(&env, &self.0, now).await
    }
}

/// The handler's context from the process's backends: the one wiring its container, its
/// Lambda, `worldland up` and the demo share (clients made once per process, never in the handler).
pub async fn context(b: &Backends) -> Result<Context, BackendError> {
    let cfg = b.config();
    Ok(Context {
        store: b.store().await?,
        bus: b.bus(),
        replies: b.replies().await?,
        policy: cfg.validation_policy(),
        signatures: cfg.signature_policy,
    })
}

/// The worker, for the entry points.
pub async fn worker(b: Backends) -> Result<Worker, BackendError> {
    Ok(Worker::consumer(RegistrationHandler(context(&b).await?)))
}
