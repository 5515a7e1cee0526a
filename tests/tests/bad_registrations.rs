//! Malformed and hostile registrations: each is refused with its exact reason code, answered to
//! the provider when its id is valid (never on someone else's stream), and changes nothing.

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
    /// Whether the refusal is answered on the provider's response stream.
    answered: bool,
}

fn envelope(data: String, signature: Option<String>) -> StreamEnvelope {
    StreamEnvelope {
        stream: "provider:registration".into(),
        entry_id: "1-0".into(),
        data,
        signature,
        timestamp: None,
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
        true,
    );
    case(
        "wallet checksum wrong",
        &|v| v["wallet_addr"] = json!("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
        "wallet_checksum_mismatch",
        true,
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
        answered: true,
    });
    out.push(Case {
        name: "no signature",
        envelope: envelope(good.clone(), None),
        reason: "signature_missing",
        answered: true,
    });
    out.push(Case {
        name: "signature not hex",
        envelope: envelope(good.clone(), Some("0xzz".into())),
        reason: "signature_malformed",
        answered: true,
    });
    let mut tampered = signed(&base, &p.key);
    tampered.data = tampered.data.replacen(&p.registration.spec.hostname, "tampered-host", 1);
    out.push(Case {
        name: "data changed after signing",
        envelope: tampered,
        reason: "signature_mismatch",
        answered: true,
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
