//! Malformed and hostile registrations: each is refused with its exact reason code, answered on
//! the provider's stream only when the sender is proven to own the id (a signature by the id's
//! wallet; under policy `optional`, an unsigned entry from the id's stored wallet) — never on
//! someone else's stream — and changes nothing.

use std::sync::Arc;

use chrono::{Duration, Utc};
use k256::ecdsa::SigningKey;
use serde_json::{json, Value};
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::messages::StreamEnvelope;
use worldland_core::signature::{sign_personal, SignaturePolicy};
use worldland_core::state::{ItemStore, Table};
use worldland_core::validation::ValidationPolicy;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::validated_sink;
use worldland_tests::Outcome;

struct Case {
    name: &'static str,
    /// The entry as it reaches the handler.
    envelope: StreamEnvelope,
    reason: &'static str,
    /// Whether the refusal is answered on the provider's response stream: only when the sender
    /// is proven to own the id.
    answered: bool,
}

fn envelope(data: String, signature: Option<String>) -> StreamEnvelope {
    StreamEnvelope {
        stream: "provider:registration".into(),
        entry_id: "1-0".into(),
        data,
        signature,
        timestamp: None,
        received_at_ms: None,
    }
}

fn signed(v: &Value, key: &SigningKey) -> StreamEnvelope {
    let data = v.to_string();
    let sig = sign_personal(key, data.as_bytes());
    envelope(data, Some(sig))
}

fn cases(p: &SimulatedProvider, thief: &SimulatedProvider) -> Vec<Case> {
    let base = serde_json::to_value(&p.registration).unwrap();
    let now = Utc::now();
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let mut out = vec![];
    let mut case = |name, f: &dyn Fn(&mut Value), reason, answered| {
        out.push(Case {
            name,
            envelope: signed(&mutate(f), &p.key),
            reason,
            answered,
        });
    };
    case(
        "upper-case provider id",
        &|v| v["provider_id"] = json!("Provider-1"),
        "invalid_provider_id",
        false,
    );
    case(
        "provider id too long",
        &|v| v["provider_id"] = json!("a".repeat(64)),
        "invalid_provider_id",
        false,
    );
    case(
        "provider id with a path",
        &|v| v["provider_id"] = json!("p/../x"),
        "invalid_provider_id",
        false,
    );
    case(
        "wallet not hex",
        &|v| v["wallet_addr"] = json!("0x1234...abcd"),
        "invalid_wallet_addr",
        false,
    );
    case(
        "wallet checksum wrong",
        &|v| v["wallet_addr"] = json!("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
        "wallet_checksum_mismatch",
        false,
    );
    case(
        "hostname with underscore",
        &|v| v["spec"]["hostname"] = json!("bad_host"),
        "invalid_hostname",
        true,
    );
    case(
        "hostname with a leading dash",
        &|v| v["spec"]["hostname"] = json!("-lead"),
        "invalid_hostname",
        true,
    );
    case(
        "hostname too long",
        &|v| v["spec"]["hostname"] = json!(vec!["a".repeat(63); 4].join(".")),
        "invalid_hostname",
        true,
    );
    case(
        "private public_ip",
        &|v| v["spec"]["public_ip"] = json!("10.0.0.5"),
        "non_public_ip",
        true,
    );
    case(
        "loopback public_ip",
        &|v| v["spec"]["public_ip"] = json!("127.0.0.1"),
        "non_public_ip",
        true,
    );
    case(
        "link-local IPv6",
        &|v| v["spec"]["public_ip"] = json!("fe80::1"),
        "non_public_ip",
        true,
    );
    case(
        "not an IP",
        &|v| v["spec"]["public_ip"] = json!("999.1.1.1"),
        "invalid_public_ip",
        true,
    );
    case(
        "no GPUs",
        &|v| {
            v["spec"]["total_gpus"] = json!(0);
            v["spec"]["gpus"] = json!([]);
        },
        "gpu_count_out_of_range",
        true,
    );
    case("65 GPUs", &|v| v["spec"]["total_gpus"] = json!(65), "gpu_count_out_of_range", true);
    case(
        "GPU count and list disagree",
        &|v| {
            let n = v["spec"]["gpus"].as_array().unwrap().len();
            v["spec"]["total_gpus"] = json!(n + 1);
        },
        "gpu_count_mismatch",
        true,
    );
    case(
        "GPU without a name",
        &|v| v["spec"]["gpus"][0]["name"] = json!("  "),
        "gpu_name_missing",
        true,
    );
    case(
        "GPU with 512 MiB",
        &|v| v["spec"]["gpus"][0]["memory_mb"] = json!(512),
        "gpu_memory_out_of_range",
        true,
    );
    case(
        "GPU with 2 TiB",
        &|v| v["spec"]["gpus"][0]["memory_mb"] = json!(2u64 * 1024 * 1024),
        "gpu_memory_out_of_range",
        true,
    );
    case(
        "zero CPU cores",
        &|v| v["spec"]["cpu_cores"] = json!(0),
        "cpu_cores_out_of_range",
        true,
    );
    case(
        "2000 CPU cores",
        &|v| v["spec"]["cpu_cores"] = json!(2000),
        "cpu_cores_out_of_range",
        true,
    );
    case(
        "512 MiB of memory",
        &|v| v["spec"]["total_memory_mb"] = json!(512),
        "memory_out_of_range",
        true,
    );
    case(
        "no free disk",
        &|v| v["spec"]["available_disk_gb"] = json!(0),
        "disk_out_of_range",
        true,
    );
    case(
        "a spec padded to 40 KiB",
        &|v| v["spec"]["kernel_ver"] = json!("x".repeat(40 * 1024)),
        "spec_too_large",
        true,
    );
    case(
        "offers more GPUs than it has",
        &|v| v["capacity"]["gpu_count"] = json!(100),
        "capacity_above_spec",
        true,
    );
    case(
        "offers more memory than it has",
        &|v| v["capacity"]["memory_mb"] = json!(u64::MAX / 2),
        "capacity_above_spec",
        true,
    );
    case(
        "mining more GPUs than offered",
        &|v| v["mining_config"] = json!({"gpu_count": 100}),
        "capacity_above_spec",
        true,
    );
    case("offers no GPU", &|v| v["capacity"]["gpu_count"] = json!(0), "no_gpu_offered", true);
    case(
        "free GPUs",
        &|v| v["capacity"]["gpu_price_per_hour"] = json!(0.0),
        "invalid_price",
        true,
    );
    case(
        "negative price",
        &|v| v["capacity"]["gpu_price_per_hour"] = json!(-1.0),
        "invalid_price",
        true,
    );
    case(
        "absurd price",
        &|v| v["capacity"]["gpu_price_per_hour"] = json!(1e9),
        "price_above_ceiling",
        true,
    );
    case(
        "price that rounds to 0 micro-units",
        &|v| v["capacity"]["gpu_price_per_hour"] = json!(4e-7),
        "price_below_floor",
        true,
    );
    case(
        "price as a string",
        &|v| v["capacity"]["gpu_price_per_hour"] = json!("0.5"),
        "malformed_json",
        true,
    );
    case(
        "cpu_cores as a string",
        &|v| v["spec"]["cpu_cores"] = json!("32"),
        "malformed_json",
        true,
    );
    case(
        "negative memory",
        &|v| v["spec"]["total_memory_mb"] = json!(-1),
        "malformed_json",
        true,
    );
    case(
        "no spec",
        &|v| v.as_object_mut().unwrap().remove("spec").map(|_| ()).unwrap_or(()),
        "malformed_json",
        true,
    );
    case(
        "replayed timestamp",
        &|v| v["timestamp"] = json!((now - Duration::minutes(10)).to_rfc3339()),
        "timestamp_outside_window",
        true,
    );
    case(
        "timestamp from the future",
        &|v| v["timestamp"] = json!((now + Duration::hours(1)).to_rfc3339()),
        "timestamp_outside_window",
        true,
    );
    case(
        "enc_pubkey not a key",
        &|v| v["enc_pubkey"] = json!("c2hvcnQ="),
        "invalid_enc_pubkey",
        true,
    );
    let good = base.to_string();
    out.push(Case {
        name: "signed by another key",
        envelope: signed(&base, &thief.key),
        reason: "signature_mismatch",
        answered: false,
    });
    out.push(Case {
        name: "no signature",
        envelope: envelope(good.clone(), None),
        reason: "signature_missing",
        answered: false,
    });
    out.push(Case {
        name: "signature not hex",
        envelope: envelope(good.clone(), Some("0xzz".into())),
        reason: "signature_malformed",
        answered: false,
    });
    let mut tampered = signed(&base, &p.key);
    tampered.data = tampered.data.replacen(&p.registration.spec.hostname, "tampered-host", 1);
    out.push(Case {
        name: "data changed after signing",
        envelope: tampered,
        reason: "signature_mismatch",
        answered: false,
    });
    out.push(Case {
        name: "not JSON",
        envelope: envelope("{not json".into(), None),
        reason: "malformed_json",
        answered: false,
    });
    out.push(Case {
        name: "JSON but not an object",
        envelope: envelope("[1,2,3]".into(), None),
        reason: "malformed_json",
        answered: false,
    });
    let huge = mutate(&|v| v["spec"]["os"] = json!("x".repeat(70 * 1024)));
    out.push(Case {
        name: "oversize entry",
        envelope: signed(&huge, &p.key),
        reason: "entry_too_large",
        answered: true,
    });
    // Someone else's wallet claiming the registered provider's id, correctly signed by itself.
    let mut claim = serde_json::to_value(&thief.registration).unwrap();
    claim["provider_id"] = json!(p.provider_id);
    out.push(Case {
        name: "another wallet claims the id",
        envelope: signed(&claim, &thief.key),
        reason: "wallet_mismatch",
        answered: false,
    });
    out
}

#[tokio::test]
async fn every_bad_registration_is_refused_with_its_reason_and_changes_nothing() {
    let now = Utc::now();
    let p = SimulatedProvider::new(1, now);
    let thief = SimulatedProvider::new(2, now);
    let store = Arc::new(MemoryStore::new());
    let bus = validated_sink();
    let replies = Arc::new(MemoryReplies::default());
    let ctx = registration_handler::Context {
        store: store.clone(),
        bus: bus.clone(),
        replies: replies.clone(),
        policy: ValidationPolicy::default(),
        signatures: SignaturePolicy::Required,
    };
    // The real provider registers first, so the id-theft case meets an existing provider.
    let first = p.envelope("provider:registration", "0-1");
    assert_eq!(Outcome::from(registration_handler::handle(&first, &ctx, now).await), Outcome::Done);
    let before = store.scan(Table::Providers).await.unwrap();
    let published_before = bus.published();

    let cases = cases(&p, &thief);
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for case in cases {
        let replies_before = replies.total();
        let id = serde_json::from_str::<Value>(&case.envelope.data)
            .ok()
            .and_then(|v| v["provider_id"].as_str().map(str::to_string));
        let answers_before = id.as_deref().map(|i| replies.answers_for(i).len()).unwrap_or(0);
        match Outcome::from(registration_handler::handle(&case.envelope, &ctx, now).await) {
            Outcome::Rejected(r) => {
                assert_eq!(r.reason.code(), case.reason, "{}: {}", case.name, r.message)
            }
            other => panic!("{}: expected rejection {}, got {other:?}", case.name, case.reason),
        }
        assert_eq!(
            store.scan(Table::Providers).await.unwrap(),
            before,
            "{}: the store changed",
            case.name
        );
        assert_eq!(bus.published(), published_before, "{}: something was published", case.name);
        if case.answered {
            let answers = replies.answers_for(id.as_deref().unwrap());
            assert_eq!(answers.len(), answers_before + 1, "{}: not answered", case.name);
            let last = answers.last().unwrap();
            assert!(
                !last.success && last.status == "rejected" && last.message.starts_with(case.reason),
                "{}: {last:?}",
                case.name
            );
        } else {
            assert_eq!(
                replies.total(),
                replies_before,
                "{}: answered on a stream it must not write",
                case.name
            );
        }
    }
}

#[tokio::test]
async fn an_unsigned_registration_is_accepted_only_under_policy_optional() {
    let now = Utc::now();
    let p = SimulatedProvider::new(3, now);
    let store = Arc::new(MemoryStore::new());
    let ctx = |policy| registration_handler::Context {
        store: store.clone(),
        bus: validated_sink(),
        replies: Arc::new(MemoryReplies::default()),
        policy: ValidationPolicy::default(),
        signatures: policy,
    };
    let mut unsigned = p.envelope("provider:registration", "5-0");
    unsigned.signature = None;
    assert!(
        matches!(Outcome::from(registration_handler::handle(&unsigned, &ctx(SignaturePolicy::Required), now).await), Outcome::Rejected(r) if r.reason.code() == "signature_missing")
    );
    assert_eq!(
        Outcome::from(registration_handler::handle(&unsigned, &ctx(SignaturePolicy::Optional), now).await),
        Outcome::Done
    );
    // A wrong signature is refused even under `optional`.
    let mut wrong = p.envelope("provider:registration", "6-0");
    wrong.signature = Some(sign_personal(&SimulatedProvider::new(4, now).key, wrong.data.as_bytes()));
    assert!(
        matches!(Outcome::from(registration_handler::handle(&wrong, &ctx(SignaturePolicy::Optional), now).await), Outcome::Rejected(r) if r.reason.code() == "signature_mismatch")
    );
}

/// The registration handler on `store`, answers kept in `replies`.
fn handler_ctx(store: Arc<MemoryStore>, replies: Arc<MemoryReplies>, signatures: SignaturePolicy) -> registration_handler::Context {
    registration_handler::Context {
        store,
        bus: validated_sink(),
        replies,
        policy: ValidationPolicy::default(),
        signatures,
    }
}

/// Handles `env`, expects it refused with `reason`, and returns how the transport disposes of
/// it: it must be a dead letter with that reason.
async fn refused_and_dead_lettered(env: &StreamEnvelope, ctx: &registration_handler::Context, reason: &str, what: &str) {
    let result = registration_handler::handle(env, ctx, Utc::now()).await;
    match worldland_runtime::policy::disposition("registration-handler", Some(&env.entry_id), &result) {
        worldland_runtime::policy::Disposition::DeadLetter { reason: got, .. } => assert_eq!(got, reason, "{what}"),
        other => panic!("{what}: expected a dead letter ({reason}), got {other:?}"),
    }
}

/// Point 4 of "zero trust on the wire": anyone can XADD a registration naming any provider id.
/// One whose signature does not verify — made with the attacker's key over the victim's id and
/// wallet — must not put a `rejected` answer on the victim's response stream, whether the victim
/// is still waiting for its first answer (nothing stored yet) or already registered: it is only
/// dead-lettered with its reason. Nor may a validly signed claim by another wallet, nor (under
/// policy `required`) an unsigned one.
#[tokio::test]
async fn forged_signature_registration_gets_no_answer_on_the_victims_stream() {
    let now = Utc::now();
    let victim = SimulatedProvider::new(10, now);
    let attacker = SimulatedProvider::new(11, now);
    for registered in [false, true] {
        let store = Arc::new(MemoryStore::new());
        let replies = Arc::new(MemoryReplies::default());
        let ctx = handler_ctx(store.clone(), replies.clone(), SignaturePolicy::Required);
        if registered {
            let own = victim.envelope("provider:registration", "1-0");
            assert_eq!(Outcome::from(registration_handler::handle(&own, &ctx, now).await), Outcome::Done);
        }
        let before = store.scan(Table::Providers).await.unwrap();
        let stage = if registered { "victim registered" } else { "victim waiting" };

        // The victim's id and wallet, signed with the attacker's key: one with a spec that
        // fails validation first, one that fails only on the signature.
        let mut bad_spec = victim.registration.clone();
        bad_spec.spec.hostname = "bad_host".into();
        let forged = worldland_provider_sdk::simulated::signed_envelope(&bad_spec, &attacker.key, "provider:registration", "2-0");
        refused_and_dead_lettered(&forged, &ctx, "invalid_hostname", stage).await;
        let forged =
            worldland_provider_sdk::simulated::signed_envelope(&victim.registration, &attacker.key, "provider:registration", "3-0");
        refused_and_dead_lettered(&forged, &ctx, "signature_mismatch", stage).await;
        // A malformed signature, none at all, and a tampered body.
        let mut malformed = victim.envelope("provider:registration", "4-0");
        malformed.signature = Some("0xzz".into());
        refused_and_dead_lettered(&malformed, &ctx, "signature_malformed", stage).await;
        let mut unsigned = envelope(serde_json::to_string(&bad_spec).unwrap(), None);
        unsigned.entry_id = "5-0".into();
        refused_and_dead_lettered(&unsigned, &ctx, "invalid_hostname", stage).await;
        // JSON that is no registration but names the victim: nothing proves who wrote it.
        let junk = envelope(
            json!({"provider_id": victim.provider_id, "wallet_addr": victim.registration.wallet_addr, "spec": 1}).to_string(),
            Some("0x00".into()),
        );
        refused_and_dead_lettered(&junk, &ctx, "malformed_json", stage).await;
        if registered {
            // The attacker's own wallet, validly signed, claiming the victim's id with a bad spec.
            let mut claim = attacker.registration.clone();
            claim.provider_id = victim.provider_id.clone();
            claim.spec.hostname = "bad_host".into();
            let env = worldland_provider_sdk::simulated::signed_envelope(&claim, &attacker.key, "provider:registration", "6-0");
            refused_and_dead_lettered(&env, &ctx, "invalid_hostname", stage).await;
        }

        assert!(
            replies.answers_for(&victim.provider_id).is_empty(),
            "{stage}: an unproven sender's refusal was written on the victim's stream: {:?}",
            replies.answers_for(&victim.provider_id)
        );
        assert_eq!(replies.total(), 0, "{stage}: nobody is answered");
        assert_eq!(store.scan(Table::Providers).await.unwrap(), before, "{stage}: the store changed");
    }
}

/// The owner itself is still told why: a refusal of a registration signed by the id's own wallet
/// is answered (under either policy), and under policy `optional` an unsigned one is answered
/// only when the id's stored wallet is the one it claims — never for an id nobody owns yet.
#[tokio::test]
async fn refusals_are_answered_only_to_the_proven_owner() {
    let now = Utc::now();
    let p = SimulatedProvider::new(12, now);
    let fresh = SimulatedProvider::new(13, now);
    let store = Arc::new(MemoryStore::new());
    let replies = Arc::new(MemoryReplies::default());
    let ctx = handler_ctx(store.clone(), replies.clone(), SignaturePolicy::Optional);
    let own = p.envelope("provider:registration", "1-0");
    assert_eq!(Outcome::from(registration_handler::handle(&own, &ctx, now).await), Outcome::Done);

    let mut bad = p.registration.clone();
    bad.spec.public_ip = "10.0.0.9".into();
    // Signed by the owner: answered.
    let signed = worldland_provider_sdk::simulated::signed_envelope(&bad, &p.key, "provider:registration", "2-0");
    refused_and_dead_lettered(&signed, &ctx, "non_public_ip", "signed").await;
    assert_eq!(replies.answers_for(&p.provider_id).len(), 1);
    assert!(replies.answers_for(&p.provider_id)[0].message.starts_with("non_public_ip"));
    // Unsigned under `optional`, from the stored wallet: answered.
    let mut unsigned = envelope(serde_json::to_string(&bad).unwrap(), None);
    unsigned.entry_id = "3-0".into();
    refused_and_dead_lettered(&unsigned, &ctx, "non_public_ip", "unsigned, stored wallet").await;
    assert_eq!(replies.answers_for(&p.provider_id).len(), 2);
    // Unsigned under `optional`, claiming another wallet for the id: not answered.
    let mut other_wallet = bad.clone();
    other_wallet.wallet_addr = fresh.registration.wallet_addr.clone();
    let env = envelope(serde_json::to_string(&other_wallet).unwrap(), None);
    refused_and_dead_lettered(&env, &ctx, "non_public_ip", "unsigned, other wallet").await;
    assert_eq!(replies.answers_for(&p.provider_id).len(), 2);
    // Unsigned under `optional`, for an id nobody owns: nobody proven, nobody answered.
    let mut unowned = fresh.registration.clone();
    unowned.spec.public_ip = "10.0.0.9".into();
    let env = envelope(serde_json::to_string(&unowned).unwrap(), None);
    refused_and_dead_lettered(&env, &ctx, "non_public_ip", "unsigned, unowned id").await;
    assert!(replies.answers_for(&fresh.provider_id).is_empty());
    // Signed by its wallet, for an id nobody owns yet: the signer is the would-be owner, answered.
    let env = worldland_provider_sdk::simulated::signed_envelope(&unowned, &fresh.key, "provider:registration", "4-0");
    refused_and_dead_lettered(&env, &ctx, "non_public_ip", "signed, unowned id").await;
    assert_eq!(replies.answers_for(&fresh.provider_id).len(), 1);
}

/// Point 2, ids: forms that a UUID parser or `label_value` would map onto another provider's id
/// (and so onto its `worldland.io/provider-id` label) are refused at validation with
/// `invalid_provider_id` — stored nowhere, answered to nobody, passed on to no one.
#[tokio::test]
async fn colliding_provider_id_forms_are_refused() {
    let now = Utc::now();
    let victim_id = "550e8400-e29b-41d4-a716-446655440000";
    let mut victim = SimulatedProvider::new(20, now);
    victim.provider_id = victim_id.into();
    victim.registration.provider_id = victim_id.into();
    let attacker = SimulatedProvider::new(21, now);
    let store = Arc::new(MemoryStore::new());
    let replies = Arc::new(MemoryReplies::default());
    let bus = validated_sink();
    let ctx = registration_handler::Context {
        store: store.clone(),
        bus: bus.clone(),
        replies: replies.clone(),
        policy: ValidationPolicy::default(),
        signatures: SignaturePolicy::Required,
    };
    let own = victim.envelope("provider:registration", "1-0");
    assert_eq!(Outcome::from(registration_handler::handle(&own, &ctx, now).await), Outcome::Done);
    let (before, published) = (store.scan(Table::Providers).await.unwrap(), bus.published());
    for form in [
        format!("-{victim_id}"),
        format!("{victim_id}-"),
        format!("{{{victim_id}}}"),
        victim_id.to_uppercase(),
        format!("urn:uuid:{victim_id}"),
        format!("--{victim_id}"),
        format!("{victim_id}."),
    ] {
        let mut reg = attacker.registration.clone();
        reg.provider_id = form.clone();
        let env = worldland_provider_sdk::simulated::signed_envelope(&reg, &attacker.key, "provider:registration", "2-0");
        match Outcome::from(registration_handler::handle(&env, &ctx, now).await) {
            Outcome::Rejected(r) => assert_eq!(r.reason.code(), "invalid_provider_id", "{form}"),
            other => panic!("{form}: expected invalid_provider_id, got {other:?}"),
        }
    }
    assert_eq!(store.scan(Table::Providers).await.unwrap(), before, "nothing stored");
    assert_eq!(bus.published(), published, "nothing passed on");
    assert_eq!(replies.total(), 0, "nobody answered");
}
