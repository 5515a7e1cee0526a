//! The provider item and its state transitions. Each transition is a pure function returning
//! the condition and the update of one conditional write; the stores only execute them.

use chrono::{DateTime, Duration, Utc};

use super::{attr, price_to_micros, Transition};
use crate::labels::gpu_model_label;
use crate::messages::{ProviderState, Registration};
use crate::state::{ms, Cond, Op};
use crate::validation::node_name;

/// States from which a registration (re)starts the provider as `pending`.
const RESTARTABLE: [ProviderState; 3] = [ProviderState::Pending, ProviderState::Expired, ProviderState::Rejected];

/// A new provider, or its own wallet registering again while not yet approved. The registration
/// id guard makes a redelivered registration write nothing. Capacity in use is never touched.
pub fn register_pending(reg: &Registration, registration_id: &str, now: DateTime<Utc>) -> Transition {
    let wallet = reg.wallet_addr.to_ascii_lowercase();
    let cond = Cond::Or(vec![
        Cond::ItemNotExists,
        Cond::And(vec![
            Cond::eq(attr::WALLET, wallet.as_str()),
            Cond::state_in(&RESTARTABLE),
            Cond::Not(Box::new(Cond::eq(attr::REGISTRATION_ID, registration_id))),
        ]),
    ]);
    // Everything the broker decides from is read from the working copy, the model label too: a
    // long GPU name kept there as its label must give the label the ledger and placement give.
    let spec = super::specs::working_copy(&reg.spec);
    let first_gpu = spec.gpus.first().map(|g| g.name.as_str()).unwrap_or_default();
    let offered_gpus = reg.capacity.gpu_count.unwrap_or(reg.spec.total_gpus);
    let ops = vec![
        Op::set(attr::WALLET, wallet),
        Op::set(attr::STATE, ProviderState::Pending),
        Op::set(attr::NODE_NAME, node_name(&reg.provider_id, &reg.spec.hostname)),
        Op::set(attr::GPU_MODEL, gpu_model_label(first_gpu)),
        Op::set(attr::GPU_COUNT, i64::from(offered_gpus)),
        Op::set(attr::PRICE_MICROS, price_to_micros(reg.capacity.gpu_price_per_hour)),
        Op::set(attr::SPEC, serde_json::to_string(&spec).expect("spec serialises")),
        Op::set(attr::CAPACITY, serde_json::to_string(&reg.capacity).expect("capacity serialises")),
        Op::set(
            attr::MINING,
            reg.mining_config
                .as_ref()
                .map(|m| serde_json::to_string(m).expect("serialises"))
                .unwrap_or_default(),
        ),
        Op::set(attr::REGISTRATION_ID, registration_id),
        Op::set(attr::REGISTERED_AT, ms(now)),
        Op::set(attr::UPDATED_AT, ms(now)),
        Op::set(attr::HB_AT, ms(now)),
    ];
    Transition::new(cond, ops)
}

/// Reserves a bootstrap token id for a pending provider, unless one is reserved and still valid.
pub fn reserve_token(token_id: &str, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::eq(attr::STATE, ProviderState::Pending).and(Cond::Or(vec![
            Cond::AttrNotExists(attr::TOKEN_ID.into()),
            Cond::Le(attr::TOKEN_EXPIRES_AT.into(), ms(now)),
        ])),
        vec![
            Op::set(attr::TOKEN_ID, token_id),
            Op::set(attr::TOKEN_EXPIRES_AT, ms(expires_at)),
            Op::set(attr::UPDATED_AT, ms(now)),
            Op::Remove(attr::TOKEN_CREATED.into()),
            Op::Remove(attr::SEALED_JOIN.into()),
            Op::Remove(attr::SEALED_TO.into()),
        ],
    )
}

/// Replaces the reserved token id `old` by a freshly drawn one, while the provider is still in
/// `state` (pending, or approved and not joined): after a create of `old` met 409 (a collision,
/// or an earlier create never recorded), or when `old` was created but its secret cannot be sent
/// again to this registration. Only if `old` is still the reservation, so two deliveries never
/// both replace it. While approved, the index sort key follows the new token's expiry.
pub fn replace_token(old: &str, token_id: &str, expires_at: DateTime<Utc>, state: ProviderState, now: DateTime<Utc>) -> Transition {
    let mut ops = vec![
        Op::set(attr::TOKEN_ID, token_id),
        Op::set(attr::TOKEN_EXPIRES_AT, ms(expires_at)),
        Op::set(attr::UPDATED_AT, ms(now)),
        Op::Remove(attr::TOKEN_CREATED.into()),
        Op::Remove(attr::SEALED_JOIN.into()),
        Op::Remove(attr::SEALED_TO.into()),
    ];
    if state == ProviderState::Approved {
        ops.push(Op::set(attr::HB_AT, ms(expires_at)));
    }
    Transition::new(Cond::eq(attr::STATE, state).and(Cond::eq(attr::TOKEN_ID, old)), ops)
}

/// Records that the Secret of the reserved token `token_id` was created (the API said 201), with
/// the answer's sealed join and the key it is sealed to when the provider gave one — so a
/// redelivery answers with the same token, and a later 409 on this id is known to be ours.
pub fn record_token_created(token_id: &str, sealed: Option<(&str, &str)>, now: DateTime<Utc>) -> Transition {
    let mut ops = vec![Op::set(attr::TOKEN_CREATED, token_id), Op::set(attr::UPDATED_AT, ms(now))];
    match sealed {
        Some((box_b64, to)) => {
            ops.push(Op::set(attr::SEALED_JOIN, box_b64));
            ops.push(Op::set(attr::SEALED_TO, to));
        }
        None => {
            ops.push(Op::Remove(attr::SEALED_JOIN.into()));
            ops.push(Op::Remove(attr::SEALED_TO.into()));
        }
    }
    Transition::new(
        Cond::state_in(&[ProviderState::Pending, ProviderState::Approved]).and(Cond::eq(attr::TOKEN_ID, token_id)),
        ops,
    )
}

/// The recorder refused to join an approved provider on `node_name` (the node carries another
/// provider's id, or the name is reserved by another): the provider stays `approved` — never
/// joined, labelled or available — with `why` (reason code first) recorded for `providers show`.
/// Its approval expires with its token as any unjoined one does.
pub fn refuse_join(node_name: &str, why: &str, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::eq(attr::STATE, ProviderState::Approved).and(Cond::eq(attr::NODE_NAME, node_name)),
        vec![Op::set(attr::UNSCHEDULABLE, why), Op::set(attr::UPDATED_AT, ms(now))],
    )
}

/// `pending → approved`, only with the token that was reserved (and so really created).
/// While approved, the index sort key holds the token's expiry.
pub fn approve(token_id: &str, registration_id: &str, token_expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::eq(attr::STATE, ProviderState::Pending).and(Cond::eq(attr::TOKEN_ID, token_id)),
        vec![
            Op::set(attr::STATE, ProviderState::Approved),
            Op::set(attr::APPROVED_AT, ms(now)),
            Op::set(attr::ANSWERED_REGISTRATION, registration_id),
            Op::set(attr::UPDATED_AT, ms(now)),
            Op::set(attr::HB_AT, ms(token_expires_at)),
        ],
    )
}

/// What a heartbeat records.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatFacts<'a> {
    /// Node the heartbeat came from.
    pub node_name: &'a str,
    /// The heartbeat's own timestamp, the agent's word: it orders heartbeats (`last_hb`), never
    /// decides liveness.
    pub at: DateTime<Utc>,
    /// When the broker received it (its stream entry's time, bounded by the broker's clock): it
    /// becomes `hb_at`, which decides liveness, offline detection and billing.
    pub received_at: DateTime<Utc>,
    /// The heartbeat's signed sequence number, when the agent sends one: it then orders
    /// heartbeats (`hb_seq`) instead of `at`, so an agent clock stepped back changes nothing.
    pub seq: Option<i64>,
    /// The status the agent claimed; recorded as `hb_status`.
    pub claimed_status: &'a str,
    /// Jobs the agent reported.
    pub active_jobs: i64,
    /// The agent's load, as the JSON stored under `usage`.
    pub usage_json: String,
}

impl HeartbeatFacts<'_> {
    fn ops(&self) -> Vec<Op> {
        let order = match self.seq {
            Some(seq) => Op::set(attr::HB_SEQ, seq),
            None => Op::set(attr::LAST_HB, ms(self.at)),
        };
        vec![
            Op::set(attr::HB_AT, ms(self.received_at)),
            order,
            Op::set(attr::HB_STATUS, self.claimed_status),
            Op::set(attr::ACTIVE_JOBS, self.active_jobs),
            Op::set(attr::USAGE, self.usage_json.clone()),
        ]
    }

    /// Holds only for a heartbeat later than the last recorded one of its kind: by `hb_seq` for
    /// a sequenced heartbeat, by the agent's timestamp (`last_hb`) for one without `seq`.
    fn is_newer(&self) -> Cond {
        let (path, value) = match self.seq {
            Some(seq) => (attr::HB_SEQ, seq),
            None => (attr::LAST_HB, ms(self.at)),
        };
        Cond::Or(vec![Cond::AttrNotExists(path.into()), Cond::Lt(path.into(), value)])
    }
}

/// The hot path: one write, no read before it. Applies only to a joined, available or offline
/// provider on its own node, signed by its own wallet (when signed), and only if this heartbeat
/// is later than the last one (by its sequence number, else its timestamp: see
/// [`HeartbeatFacts::seq`]) — so a late or replayed heartbeat changes nothing — and at most one
/// per `min_interval` of the broker's receive time (`hb_at`): a flood makes at most one write per
/// interval (see [`within_min_interval`]).
pub fn record_heartbeat(hb: &HeartbeatFacts<'_>, signer: Option<&str>, min_interval: Duration) -> Transition {
    let mut cond = Cond::state_in(&[ProviderState::Joined, ProviderState::Available, ProviderState::Offline])
        .and(Cond::eq(attr::NODE_NAME, hb.node_name))
        .and(hb.is_newer());
    if min_interval > Duration::zero() {
        let latest = ms(hb.received_at) - min_interval.num_milliseconds();
        cond = cond.and(Cond::Or(vec![
            Cond::AttrNotExists(attr::HB_AT.into()),
            Cond::Le(attr::HB_AT.into(), latest),
        ]));
    }
    if let Some(w) = signer {
        cond = cond.and(Cond::eq(attr::WALLET, w.to_ascii_lowercase()));
    }
    Transition::new(cond, hb.ops())
}

/// Whether a heartbeat received at `received_at` comes less than `min_interval` after the last
/// recorded one (`last_hb_at`): [`record_heartbeat`] does not apply to it, and it is a routine
/// duplicate, acknowledged, never an error.
pub fn within_min_interval(last_hb_at: DateTime<Utc>, received_at: DateTime<Utc>, min_interval: Duration) -> bool {
    min_interval > Duration::zero() && ms(last_hb_at) > ms(received_at) - min_interval.num_milliseconds()
}

/// `approved → joined` on the first heartbeat from the provider's node; records why the node
/// contradicts the spec, if it does.
pub fn join(hb: &HeartbeatFacts<'_>, unschedulable: Option<&str>, now: DateTime<Utc>) -> Transition {
    let mut ops = hb.ops();
    ops.push(Op::set(attr::STATE, ProviderState::Joined));
    ops.push(Op::set(attr::JOINED_AT, ms(now)));
    ops.push(Op::set(attr::UPDATED_AT, ms(now)));
    ops.push(match unschedulable {
        Some(why) => Op::set(attr::UNSCHEDULABLE, why),
        None => Op::Remove(attr::UNSCHEDULABLE.into()),
    });
    Transition::new(
        Cond::eq(attr::STATE, ProviderState::Approved).and(Cond::eq(attr::NODE_NAME, hb.node_name)),
        ops,
    )
}

/// `joined → available` (node Ready and labelled), or `offline → available` on recovery. Never
/// for a provider whose node contradicts its spec. The first time, the capacity ledger is set up
/// (`ledger`: from [`ledger_for`]), guarded so that it is never set up twice.
/// `partition` (from [`placement_partition_for`]) files the provider in the placement index, which
/// holds available providers only (see [`mark_offline_if_stale`]).
pub fn make_available(from: ProviderState, ledger: Option<Vec<Op>>, partition: Option<String>, now: DateTime<Utc>) -> Transition {
    let mut cond = Cond::eq(attr::STATE, from).and(Cond::AttrNotExists(attr::UNSCHEDULABLE.into()));
    let mut ops = vec![
        Op::set(attr::STATE, ProviderState::Available),
        Op::set(attr::UPDATED_AT, ms(now)),
        Op::Remove(attr::OFFLINE_AT.into()),
    ];
    if let Some(p) = partition {
        ops.push(Op::set(attr::PLACE_MODEL, p));
    }
    if let Some(init) = ledger {
        cond = cond.and(Cond::AttrNotExists(attr::LEDGER.into()));
        ops.extend(init);
    }
    Transition::new(cond, ops)
}

/// Files an available provider stored before the placement index in it (once: only while it is
/// not filed).
pub fn file_for_placement(partition: String) -> Transition {
    Transition::new(
        Cond::eq(attr::STATE, ProviderState::Available).and(Cond::AttrNotExists(attr::PLACE_MODEL.into())),
        vec![Op::set(attr::PLACE_MODEL, partition)],
    )
}

/// `joined`/`available` → `offline`, only if still stale at write time: a heartbeat that lands
/// between the sweeper's query and this write wins.
pub fn mark_offline_if_stale(stale_before: DateTime<Utc>, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::state_in(&[ProviderState::Joined, ProviderState::Available]).and(Cond::Lt(attr::HB_AT.into(), ms(stale_before))),
        vec![
            Op::set(attr::STATE, ProviderState::Offline),
            Op::set(attr::OFFLINE_AT, ms(now)),
            Op::set(attr::UPDATED_AT, ms(now)),
            // Out of the placement index: it holds only available providers, so nobody can fill
            // it with registrations that never join or with providers long gone.
            Op::Remove(attr::PLACE_MODEL.into()),
        ],
    )
}

/// `approved → expired` once the token ran out without a join.
pub fn expire_if_unjoined(now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::eq(attr::STATE, ProviderState::Approved).and(Cond::Le(attr::TOKEN_EXPIRES_AT.into(), ms(now))),
        vec![
            Op::set(attr::STATE, ProviderState::Expired),
            Op::set(attr::EXPIRED_AT, ms(now)),
            Op::set(attr::UPDATED_AT, ms(now)),
        ],
    )
}

/// Records node writes so the next heartbeat knows what the node already shows.
pub fn note_node_write(labelled_jobs: Option<(i64, DateTime<Utc>)>, annotated_at: Option<DateTime<Utc>>) -> Transition {
    let mut ops = vec![];
    if let Some((j, at)) = labelled_jobs {
        ops.push(Op::set(attr::LABELLED_JOBS, j));
        ops.push(Op::set(attr::LABELLED_AT, ms(at)));
    }
    if let Some(t) = annotated_at {
        ops.push(Op::set(attr::ANNOTATED_AT, ms(t)));
    }
    Transition::new(Cond::ItemExists, ops)
}

/// Records that an already-approved provider's new registration has been answered again.
pub fn mark_answered(registration_id: &str, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::ItemExists.and(Cond::Not(Box::new(Cond::eq(attr::ANSWERED_REGISTRATION, registration_id)))),
        vec![
            Op::set(attr::ANSWERED_REGISTRATION, registration_id),
            Op::set(attr::UPDATED_AT, ms(now)),
        ],
    )
}

#[cfg(test)]
mod tests;
