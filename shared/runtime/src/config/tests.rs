use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn defaults_are_sane() {
    let c = Config::defaults();
    assert_eq!(c.signature_policy, SignaturePolicy::Required);
    assert_eq!(c.token_ttl_s, 3600);
    assert_eq!(c.max_pending_joins_per_wallet, 3);
    assert_eq!(c.replay_window_s, 300);
    assert!(!c.allow_private_networks);
    assert_eq!(c.broker_key_file, None);
    assert_eq!((c.dlq_max_length, c.dlq_ttl_s), (100_000, 1_209_600));
    assert!(c.redis_response_timeout_ms > 0 && c.amqp_connect_timeout_ms > 0);
}

#[test]
fn reads_prefixed_variables() {
    let c = Config::from_vars(vars(&[
        ("WORLDLAND_SIGNATURE_POLICY", "optional"),
        ("WORLDLAND_PREFETCH", "4"),
        ("OTHER_PREFETCH", "9"),
        ("WORLDLAND_MAX_PENDING_JOINS_PER_WALLET", "5"),
    ]))
    .unwrap();
    assert_eq!((c.signature_policy, c.prefetch), (SignaturePolicy::Optional, 4));
    assert_eq!(c.max_pending_joins_per_wallet, 5);
}

#[test]
fn errors_name_the_variable() {
    let table = [
        (("WORLDLAND_PREFETCH", "lots"), "WORLDLAND_PREFETCH"),
        (("WORLDLAND_PREFETCH", "0"), "WORLDLAND_PREFETCH"),
        (("WORLDLAND_SIGNATURE_POLICY", "sometimes"), "WORLDLAND_SIGNATURE_POLICY"),
        (("WORLDLAND_TOKEN_TTL_S", "5"), "WORLDLAND_TOKEN_TTL_S"),
        (
            ("WORLDLAND_MAX_PENDING_JOINS_PER_WALLET", "0"),
            "WORLDLAND_MAX_PENDING_JOINS_PER_WALLET",
        ),
        (
            ("WORLDLAND_MAX_PENDING_JOINS_PER_WALLET", "-1"),
            "WORLDLAND_MAX_PENDING_JOINS_PER_WALLET",
        ),
        (("WORLDLAND_PRICE_CEILING", "-1"), "WORLDLAND_PRICE_CEILING"),
        (("WORLDLAND_ALLOW_PRIVATE_NETWORKS", "maybe"), "WORLDLAND_ALLOW_PRIVATE_NETWORKS"),
        (("WORLDLAND_BROKER_KEY_FILE", ""), "WORLDLAND_BROKER_KEY_FILE"),
        (("WORLDLAND_DLQ_TTL_S", "2000000"), "WORLDLAND_DLQ_TTL_S"),
        (("WORLDLAND_REDIS_RESPONSE_TIMEOUT_MS", "0"), "WORLDLAND_REDIS_RESPONSE_TIMEOUT_MS"),
    ];
    for ((k, v), want) in table {
        let err = Config::from_vars(vars(&[(k, v)])).unwrap_err();
        assert!(err.0.contains(want), "{k}={v}: {err}");
    }
}
