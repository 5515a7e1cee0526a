//! Registration handler: validates a registration, checks its signature, and stores the provider
//! as `pending` with one conditional write; then emits `provider.validated`. A refusal is
//! answered to the provider (when its id is valid) and always logged with its reason code.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::instrument;
use worldland_core::bus::Bus;
use worldland_core::messages::{topics, ProviderResponse, ProviderValidated, Registration, StreamEnvelope, MAX_ENTRY_BYTES};
use worldland_core::replies::ProviderReplies;
use worldland_core::signature::{verify_entry, SignaturePolicy};
use worldland_core::state::providers::{register_pending, ProviderRecord};
use worldland_core::state::ItemStore;
use worldland_core::validation::{check_provider_id, validate_registration, Reason, Rejection, ValidationPolicy};
use worldland_core::worker::{decode, Failure, Handler};
use worldland_runtime::backends::{self, BackendError};
use worldland_runtime::worker::Worker;
use worldland_runtime::Config;

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

/// The provider id of a registration that did not parse, if one can be read and is valid: the
/// refusal can then still be answered.
fn provider_id_of(data: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    let id = v.get("provider_id")?.as_str()?.to_string();
    check_provider_id(&id).is_ok().then_some(id)
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
        Err(rejection) => return refuse(provider_id_of(&env.data), rejection, ctx).await,
    };
    let id = reg.provider_id.clone();
    let written = register_pending(&reg, &env.entry_id, now).run(ctx.store.as_ref(), &id).await?;
    if written.is_none() {
        // The condition failed: find out why.
        let current = ProviderRecord::load(ctx.store.as_ref(), &id)
            .await?
            .ok_or_else(|| Failure::retry("provider vanished between write and read"))?;
        if !current.wallet.eq_ignore_ascii_case(&reg.wallet_addr) {
            // Someone else's provider id: refuse, and do not write on its owner's response stream.
            let r = Rejection::new(Reason::WalletMismatch, "provider_id is registered to another wallet");
            return refuse(None, r, ctx).await;
        }
        tracing::info!(provider_id = %id, state = %current.state, "registration already recorded; passing it on");
    }
    let validated = ProviderValidated {
        provider_id: id.clone(),
        registration_id: env.entry_id.clone(),
        enc_pubkey: reg.enc_pubkey.clone(),
    };
    let body = serde_json::to_vec(&validated).map_err(Failure::retry)?;
    ctx.bus
        .publish(topics::PROVIDER_VALIDATED, &format!("validated/{}", env.entry_id), &body)
        .await?;
    Ok(())
}

/// Answers a refusal to the provider when its id is known and valid, then refuses.
async fn refuse(provider_id: Option<String>, rejection: Rejection, ctx: &Context) -> Result<(), Failure> {
    if let Some(id) = provider_id {
        let answer = ProviderResponse::rejected(format!("{}: {}", rejection.reason.code(), rejection.message));
        ctx.replies.reply(&id, &answer).await?;
    }
    Err(rejection.into())
}

/// The transport adapters' entry point: decodes the bus body, then [`handle`].
pub struct RegistrationHandler(pub Context);

#[async_trait]
impl Handler for RegistrationHandler {
    fn name(&self) -> &'static str {
        WORKER
    }
    fn bindings(&self) -> &'static [&'static str] {
        BINDINGS
    }
    async fn handle(&self, _routing_key: &str, body: &[u8], now: DateTime<Utc>) -> Result<(), Failure> {
        handle(&decode::<StreamEnvelope>(body, "a stream envelope")?, &self.0, now).await
    }
}

/// The handler built from configuration, its clients made once per process (container or Lambda
/// cold start), never inside the handler.
pub async fn from_config(cfg: &Config, bus: Arc<dyn Bus>) -> Result<RegistrationHandler, BackendError> {
    Ok(RegistrationHandler(Context {
        store: backends::store(cfg).await,
        bus,
        replies: backends::replies(cfg).await?,
        policy: cfg.validation_policy(),
        signatures: cfg.signature_policy,
    }))
}

/// The worker, for the container and Lambda entry points.
pub async fn worker(cfg: Config, bus: Arc<dyn Bus>) -> Result<Worker, BackendError> {
    Ok(Worker::Consumer(Arc::new(from_config(&cfg, bus).await?)))
}
