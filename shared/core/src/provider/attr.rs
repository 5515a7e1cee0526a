//! Attribute names of a provider's item (the providers table; key: the provider id): its
//! identity and lifecycle, its heartbeats, its capacity ledger and its placement entry, all in one
//! place. Times are epoch ms.

/// The registering wallet, lower-cased: the owner of the provider id, and the signer its heartbeats must have.
pub const WALLET: &str = "wallet";
/// The provider's state in its wire spelling; the partition key of the state index.
pub const STATE: &str = crate::state::INDEX_STATE_ATTR;
/// The state index's sort key: the registration time while pending, the token's expiry while approved, from
/// joined on the broker's receive time of the last heartbeat (liveness and billing; never the agent's clock).
pub const HB_AT: &str = crate::state::INDEX_SORT_ATTR;
/// The registration's `Spec`, as JSON: its working copy only (see [`super::specs`]; the spec as
/// registered is kept in its own item, which no heartbeat rewrites).
pub const SPEC: &str = "spec";
/// The registration's `Capacity`, as JSON.
pub const CAPACITY: &str = "capacity";
/// The registration's `MiningConfig`, as JSON; empty when it had none.
pub const MINING: &str = "mining";
/// The Kubernetes node name the broker assigned ([`crate::validation::node_name`]: host part
/// and a suffix derived from the provider id), reserved for this provider by its own item
/// ([`super::nodes`]) before approval.
pub const NODE_NAME: &str = "node_name";
/// Model label of the first GPU in the spec.
pub const GPU_MODEL: &str = "gpu_model";
/// GPUs offered: the capacity's `gpu_count`, else every GPU in the spec.
pub const GPU_COUNT: &str = "gpu_count";
/// Price per GPU-hour, in integer micro-units.
pub const PRICE_MICROS: &str = "price_micros";
/// Stream entry id of the registration last stored; a redelivery of it writes nothing.
pub const REGISTRATION_ID: &str = "registration_id";
/// When that registration was stored.
pub const REGISTERED_AT: &str = "registered_at";
/// When a worker last changed the item other than by a plain heartbeat.
pub const UPDATED_AT: &str = "updated_at";
/// Id of the bootstrap token reserved for the provider, reserved before its Secret is created.
pub const TOKEN_ID: &str = "token_id";
/// When that token expires.
pub const TOKEN_EXPIRES_AT: &str = "token_expires_at";
/// The token id whose Secret the issuer created (recorded right after the create answered
/// 201). A create of the reserved id that meets 409 while this does not name it is a
/// collision (or an earlier create never recorded, whose secret nobody was sent): the issuer
/// draws a new id instead of reading any Secret back.
pub const TOKEN_CREATED: &str = "token_created";
/// The answer's sealed join for that token (base64 sealed box, openable only with the key
/// in [`SEALED_TO`]), kept so that a redelivery answers again with the same token without
/// reading its Secret. Never the token in the clear.
pub const SEALED_JOIN: &str = "sealed_join";
/// The `enc_pubkey` the stored sealed join is sealed to.
pub const SEALED_TO: &str = "sealed_to";
/// When the provider was approved.
pub const APPROVED_AT: &str = "approved_at";
/// Stream entry id of the registration last answered on the response stream.
pub const ANSWERED_REGISTRATION: &str = "answered_registration";
/// The agent's own timestamp of its last heartbeat (ms): orders heartbeats (a replay or an
/// older one changes nothing); liveness reads `hb_at`, the broker's receive time.
pub const LAST_HB: &str = "last_hb";
/// The sequence number of the last recorded sequenced heartbeat: orders the heartbeats of agents
/// that send `seq` (a replay or an older one changes nothing), whatever their clock does.
/// Absent until the first; `last_hb` then keeps only unsequenced heartbeats' order.
pub const HB_SEQ: &str = "hb_seq";
/// What the agent last claimed its status was: recorded, never trusted.
pub const HB_STATUS: &str = "hb_status";
/// Jobs the agent reported in its last heartbeat.
pub const ACTIVE_JOBS: &str = "active_jobs";
/// Load from the last heartbeat, as JSON: `gpu` (per GPU), `cpu` and `memory`, in percent.
pub const USAGE: &str = "usage";
/// The active-jobs value last written to the node's label.
pub const LABELLED_JOBS: &str = "labelled_jobs";
/// When the node's active-jobs label was last written (ms, the broker's receive time of the
/// heartbeat that wrote it): it is patched at most once per interval.
pub const LABELLED_AT: &str = "labelled_at";
/// When the node's last-heartbeat annotation was last written (ms).
pub const ANNOTATED_AT: &str = "annotated_at";
/// Why the provider cannot be scheduled: its node contradicts the claimed spec (it stays
/// `joined`), or its join was refused (it stays `approved`; the text starts with the reason
/// code, e.g. `node_owned_by_another_provider: …`). Such a provider never becomes available.
pub const UNSCHEDULABLE: &str = "unschedulable";
/// When the node first sent a heartbeat after approval (`approved → joined`).
pub const JOINED_AT: &str = "joined_at";
/// The kubelet client CSR approved for this provider's current join token (its name, for
/// people); set before the approval is written to the cluster, so a lost answer is approved
/// again and a second request with that token is denied.
pub const CLIENT_CSR: &str = "client_csr";
/// That CSR's uid: what a replay is recognised by (a name can be reused).
pub const CLIENT_CSR_UID: &str = "client_csr_uid";
/// The join token that CSR was approved for: one client certificate per token.
pub const CLIENT_CSR_TOKEN: &str = "client_csr_token";
/// When [`CLIENT_CSR`] was recorded (epoch ms).
pub const CLIENT_CSR_AT: &str = "client_csr_at";
/// The last certificate request of this provider's that the broker denied: `<code>: <message>`.
pub const CSR_REFUSAL: &str = "csr_refusal";
/// When [`CSR_REFUSAL`] was recorded (epoch ms).
pub const CSR_REFUSED_AT: &str = "csr_refused_at";
/// When the provider went offline; removed when it becomes available again.
pub const OFFLINE_AT: &str = "offline_at";
/// Why the provider went offline when its node did, not its heartbeats: the node-health
/// symptom's code and what was seen (`kubelet_lease_stale: …`); removed when it comes back.
/// Absent on a provider marked offline for stale heartbeats.
pub const OFFLINE_REASON: &str = "offline_reason";
/// When the node of a provider marked offline for its node was first seen in trouble (epoch ms,
/// see `crate::cluster::health::assess`): its interrupted jobs are billed no later than this.
/// Removed when it comes back.
pub const NODE_UNHEALTHY_SINCE: &str = "node_unhealthy_since";
/// When an approval expired without a join.
pub const EXPIRED_AT: &str = "expired_at";

// The capacity ledger (see `crate::ledger`). GPU maps are keyed by model key.

/// `true` once the ledger is set up; absent while the provider has never been available.
pub const LEDGER: &str = "ledger";
/// Map model key → GPUs of that model offered (`free + used + mining`).
pub const GPUS_TOTAL: &str = "gpus_total";
/// Map model key → GPUs neither rented nor mining.
pub const GPUS_FREE: &str = "gpus_free";
/// Map model key → GPUs held by open allocations.
pub const GPUS_USED: &str = "gpus_used";
/// Map model key → GPUs mining while no job rents them.
pub const GPUS_MINING: &str = "gpus_mining";
/// CPU cores offered.
pub const CPU_TOTAL: &str = "cpu_total";
/// CPU cores not allocated.
pub const CPU_FREE: &str = "cpu_free";
/// CPU cores held by open allocations.
pub const CPU_USED: &str = "cpu_used";
/// Memory offered, in MiB.
pub const MEM_TOTAL: &str = "mem_total";
/// Memory not allocated, in MiB.
pub const MEM_FREE: &str = "mem_free";
/// Memory held by open allocations, in MiB.
pub const MEM_USED: &str = "mem_used";
/// Map job id → its open [`Allocation`](crate::ledger::Allocation).
pub const ALLOCS: &str = "allocs";

/// The placement index partition the provider is filed under while available (see
/// `crate::placement::placement_partition`).
pub const PLACE_MODEL: &str = crate::state::PLACEMENT_MODEL_ATTR;
