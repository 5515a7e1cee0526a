//! A provider as stored, read from its item.

use chrono::{DateTime, Utc};

use super::attr;
use crate::messages::ProviderState;
use crate::state::{from_ms, Item, ItemStore, StoreError, StoreResult, Table, Value, KEY_ATTR};

pub use crate::validation::price_to_micros;

impl ProviderRecord {
    /// When the broker received the last recorded heartbeat (`hb_at`), once there is one — for
    /// joined, available and offline providers; before joining `hb_at` holds the approval's
    /// expiry. Unlike `last_heartbeat` (the agent's word, kept only for agents without `seq`),
    /// it is recorded for every agent.
    pub fn last_received(&self) -> Option<DateTime<Utc>> {
        use crate::messages::ProviderState::{Available, Joined, Offline};
        matches!(self.state, Joined | Available | Offline).then_some(self.hb_at)
    }

    /// Whether the node's active-jobs label should be patched at `now`: the reported count
    /// differs from the labelled one, and the label was not written within `interval`.
    pub fn active_jobs_label_due(&self, now: DateTime<Utc>, interval: chrono::Duration) -> bool {
        self.labelled_jobs != Some(self.active_jobs) && self.labelled_at.is_none_or(|t| now - t >= interval)
    }
}

/// A provider as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRecord {
    /// The provider's id (the item's key).
    pub provider_id: String,
    /// The owning wallet, lower-cased.
    pub wallet: String,
    /// Current state.
    pub state: ProviderState,
    /// Kubernetes node name, assigned by the broker ([`crate::validation::node_name`]).
    pub node_name: String,
    /// Model label of the first GPU in the spec.
    pub gpu_model: String,
    /// GPUs offered.
    pub gpu_count: i64,
    /// Price per GPU-hour, in integer micro-units.
    pub price_micros: i64,
    /// The registration's spec, as stored JSON: its working copy (see [`super::specs`]).
    pub spec_json: String,
    /// The registration's capacity, as stored JSON.
    pub capacity_json: String,
    /// The registration's mining config, as stored JSON; empty when it had none.
    pub mining_json: String,
    /// Stream entry id of the registration last stored.
    pub registration_id: String,
    /// When that registration was stored.
    pub registered_at: DateTime<Utc>,
    /// When a worker last changed the item other than by a plain heartbeat.
    pub updated_at: DateTime<Utc>,
    /// The index sort key: the last heartbeat once joined; the token's expiry while approved.
    pub hb_at: DateTime<Utc>,
    /// The reserved bootstrap token id, once the issuer has reserved one.
    pub token_id: Option<String>,
    /// When that token expires.
    pub token_expires_at: Option<DateTime<Utc>>,
    /// The token id whose Secret was created, once recorded.
    pub token_created: Option<String>,
    /// The stored sealed join of that token (ciphertext only).
    pub sealed_join: Option<String>,
    /// The key the stored sealed join is sealed to.
    pub sealed_to: Option<String>,
    /// When the provider was approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// Stream entry id of the registration last answered.
    pub answered_registration: Option<String>,
    /// The last recorded heartbeat's own timestamp (ms precision); `None` before the first.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// The sequence number of the last recorded sequenced heartbeat; `None` before the first.
    pub hb_seq: Option<i64>,
    /// The status the agent claimed in its last heartbeat: shown, never trusted.
    pub heartbeat_status: Option<String>,
    /// Jobs the agent reported in its last heartbeat (0 before any).
    pub active_jobs: i64,
    /// Active-jobs value last written to the node's label; `None` before the first write.
    pub labelled_jobs: Option<i64>,
    /// When the active-jobs label was last written (the broker's receive time).
    pub labelled_at: Option<DateTime<Utc>>,
    /// When the node's last-heartbeat annotation was last written.
    pub annotated_at: Option<DateTime<Utc>>,
    /// Why the provider cannot be scheduled (its node contradicts its spec, or its join was
    /// refused); while set, it never becomes available.
    pub unschedulable: Option<String>,
    /// When the node joined.
    pub joined_at: Option<DateTime<Utc>>,
    /// The kubelet client CSR approved for this provider, once one is (its name).
    pub client_csr: Option<String>,
    /// That CSR's uid.
    pub client_csr_uid: Option<String>,
    /// The join token it was approved for.
    pub client_csr_token: Option<String>,
    /// The last certificate request of this provider's that was denied, `<code>: <message>`.
    pub csr_refusal: Option<String>,
    /// When the provider went offline; `None` unless it is offline.
    pub offline_at: Option<DateTime<Utc>>,
    /// Why it went offline when its node did (`<symptom code>: …`); `None` unless it is offline
    /// for its node (for stale heartbeats there is no reason recorded).
    pub offline_reason: Option<String>,
    /// When its node was first seen in trouble, when it went offline for its node.
    pub node_unhealthy_since: Option<DateTime<Utc>>,
    /// Whether the capacity ledger is set up (it is from the first time the provider is available).
    pub has_ledger: bool,
    /// Whether it is filed in the placement index (`place_model` set).
    pub placement_filed: bool,
}

impl ProviderRecord {
    /// Reads a provider from its stored item; `StoreError::Corrupt` when a required attribute is missing or the state is unknown.
    pub fn from_item(item: &Item) -> StoreResult<Self> {
        let key = item.get(KEY_ATTR).and_then(Value::as_str).unwrap_or("?").to_string();
        let corrupt = |why: String| StoreError::Corrupt { key: key.clone(), why };
        let s = |a: &str| item.get(a).and_then(Value::as_str).map(str::to_string);
        let n = |a: &str| item.get(a).and_then(Value::as_i64);
        let req_s = |a: &str| s(a).ok_or_else(|| corrupt(format!("missing {a}")));
        let req_n = |a: &str| n(a).ok_or_else(|| corrupt(format!("missing {a}")));
        let state_s = req_s(attr::STATE)?;
        Ok(Self {
            provider_id: key.clone(),
            wallet: req_s(attr::WALLET)?,
            state: ProviderState::parse(&state_s).ok_or_else(|| corrupt(format!("unknown state {state_s}")))?,
            node_name: req_s(attr::NODE_NAME)?,
            gpu_model: req_s(attr::GPU_MODEL)?,
            gpu_count: req_n(attr::GPU_COUNT)?,
            price_micros: req_n(attr::PRICE_MICROS)?,
            spec_json: req_s(attr::SPEC)?,
            capacity_json: req_s(attr::CAPACITY)?,
            mining_json: s(attr::MINING).unwrap_or_default(),
            registration_id: req_s(attr::REGISTRATION_ID)?,
            registered_at: from_ms(req_n(attr::REGISTERED_AT)?),
            updated_at: from_ms(req_n(attr::UPDATED_AT)?),
            hb_at: from_ms(req_n(attr::HB_AT)?),
            token_id: s(attr::TOKEN_ID),
            token_expires_at: n(attr::TOKEN_EXPIRES_AT).map(from_ms),
            token_created: s(attr::TOKEN_CREATED),
            sealed_join: s(attr::SEALED_JOIN),
            sealed_to: s(attr::SEALED_TO),
            approved_at: n(attr::APPROVED_AT).map(from_ms),
            answered_registration: s(attr::ANSWERED_REGISTRATION),
            last_heartbeat: n(attr::LAST_HB).map(from_ms),
            hb_seq: n(attr::HB_SEQ),
            heartbeat_status: s(attr::HB_STATUS),
            active_jobs: n(attr::ACTIVE_JOBS).unwrap_or(0),
            labelled_jobs: n(attr::LABELLED_JOBS),
            labelled_at: n(attr::LABELLED_AT).map(from_ms),
            annotated_at: n(attr::ANNOTATED_AT).map(from_ms),
            unschedulable: s(attr::UNSCHEDULABLE),
            joined_at: n(attr::JOINED_AT).map(from_ms),
            client_csr: s(attr::CLIENT_CSR),
            client_csr_uid: s(attr::CLIENT_CSR_UID),
            client_csr_token: s(attr::CLIENT_CSR_TOKEN),
            csr_refusal: s(attr::CSR_REFUSAL),
            offline_at: n(attr::OFFLINE_AT).map(from_ms),
            offline_reason: s(attr::OFFLINE_REASON),
            node_unhealthy_since: n(attr::NODE_UNHEALTHY_SINCE).map(from_ms),
            has_ledger: item.contains_key(attr::LEDGER),
            placement_filed: item.contains_key(attr::PLACE_MODEL),
        })
    }

    /// Reads a provider by id; `None` when there is no such item.
    pub async fn load(store: &dyn ItemStore, provider_id: &str) -> StoreResult<Option<Self>> {
        store
            .get(Table::Providers, provider_id)
            .await?
            .as_ref()
            .map(Self::from_item)
            .transpose()
    }
}

impl super::Transition {
    /// Runs on the provider `provider_id` and reads the written item as a [`ProviderRecord`];
    /// `None` when the condition failed.
    pub async fn run(&self, store: &dyn ItemStore, provider_id: &str) -> StoreResult<Option<ProviderRecord>> {
        self.run_raw(store, provider_id)
            .await?
            .as_ref()
            .map(ProviderRecord::from_item)
            .transpose()
    }
}
