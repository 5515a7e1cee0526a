use super::*;

#[test]
fn provider_ids() {
    let uuid = "550e8400-e29b-41d4-a716-446655440000";
    let table = [
        ("provider-1", true),
        ("sim-provider-00006", true),
        (uuid, true),
        ("550e8400e29b41d4a716446655440000", true),
        ("a", true),
        ("0", true),
        ("a--b", true),
        (&"a".repeat(63), true),
        (&"a".repeat(64), false),
        ("", false),
        ("Provider", false),
        ("p_1", false),
        ("p 1", false),
        ("p.1", false),
        ("p/../x", false),
        ("-", false),
        ("p-", false),
        ("-p", false),
        // The forms a UUID parser accepts but that are not the canonical spelling: each would
        // have collapsed onto the label of the canonical id.
        ("550E8400-E29B-41D4-A716-446655440000", false),
        ("{550e8400-e29b-41d4-a716-446655440000}", false),
        ("-550e8400-e29b-41d4-a716-446655440000", false),
        ("550e8400-e29b-41d4-a716-446655440000-", false),
        ("urn:uuid:550e8400-e29b-41d4-a716-446655440000", false),
        (" 550e8400-e29b-41d4-a716-446655440000", false),
        ("550e8400-e29b-41d4-a716-446655440000\n", false),
        ("sim-provider-00006.", false),
        ("ｓim-provider", false),
    ];
    for (id, ok) in table {
        assert_eq!(check_provider_id(id).is_ok(), ok, "{id:?}");
        if !ok {
            assert_eq!(check_provider_id(id).unwrap_err().reason, Reason::InvalidProviderId, "{id:?}");
        }
    }
}

/// Two accepted ids never share a label: every accepted id is its own label value, and the
/// forms that `label_value` would collapse onto an accepted id are refused.
#[test]
fn accepted_ids_never_share_a_label() {
    let victim = "550e8400-e29b-41d4-a716-446655440000";
    let colliding = [
        format!("-{victim}"),
        format!("{{{victim}}}"),
        format!("{victim}-"),
        format!("--{victim}"),
        victim.to_uppercase(),
        format!("({victim})"),
        format!("{victim}."),
        format!("_{victim}_"),
        format!(" {victim} "),
    ];
    for id in &colliding {
        assert_eq!(
            crate::labels::label_value(id).as_deref().map(str::to_ascii_lowercase).as_deref(),
            Some(victim),
            "{id:?} is a form that collapses onto the victim's label"
        );
        assert_eq!(
            check_provider_id(id).map_err(|r| r.reason),
            Err(Reason::InvalidProviderId),
            "{id:?} must be refused"
        );
    }
    let accepted = [victim, "sim-provider-00006", "a", "a-b", "a--b", "ab", "0a", "provider-1"];
    let mut labels = std::collections::BTreeSet::new();
    for id in accepted {
        assert!(check_provider_id(id).is_ok(), "{id}");
        let label = &crate::labels::provider_node_labels(id, "NVIDIA GeForce RTX 4090", 1)[crate::labels::PROVIDER_ID];
        assert_eq!(label, id, "an accepted id is its own label value");
        assert!(crate::labels::is_valid_label_value(label));
        assert!(labels.insert(label.clone()), "{id}: label shared");
    }
}

#[test]
fn node_names_are_assigned_per_provider_and_always_rfc_1123() {
    let long = "a".repeat(63);
    let hosts = [
        "gpu-server-01",
        "GPU-Server-01",
        "gpu-server-01.example.com",
        long.as_str(),
        "a",
        "1abc",
        "x-y-z-x-y-z-x-y-z-x-y-z-x-y-z-x-y-z-x-y-z-x-y-z-x-y-z",
        "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrs-tuvw",
    ];
    let ids = ["sim-provider-00006", "550e8400-e29b-41d4-a716-446655440000", "a", &"p".repeat(63)];
    let mut seen = std::collections::BTreeSet::new();
    for host in hosts {
        assert!(check_hostname(host).is_ok(), "{host}");
        for id in ids {
            let n = node_name(id, host);
            assert!(n.len() <= 63 && !n.contains('.'), "{n}: one label");
            assert!(check_hostname(&n).is_ok(), "{n}: RFC 1123");
            assert_eq!(n, n.to_ascii_lowercase(), "{n}: lower case");
            assert!(crate::labels::is_valid_label_value(&n), "{n}");
            assert_eq!(n, node_name(id, host), "deterministic");
            seen.insert(n);
        }
    }
    // Upper and lower case of one host, or one host with a domain, are the same host part.
    assert_eq!(seen.len(), (hosts.len() - 2) * ids.len());
    // Two providers claiming one host name get two names; the host part stays readable.
    let a = node_name("sim-provider-00001", "gpu-server-01");
    let b = node_name("sim-provider-00002", "gpu-server-01");
    assert_ne!(a, b);
    assert!(
        a.starts_with("gpu-server-01-") && a.len() == "gpu-server-01-".len() + NODE_SUFFIX_HEX,
        "{a}"
    );
    assert_ne!(a, "gpu-server-01", "never the bare host name");
    // A cut that ends in '-' loses it: no "--" before the suffix.
    let cut = node_name("p", &format!("{}-b", "a".repeat(NODE_HOST_PART_MAX - 1)));
    assert!(!cut.contains("--"), "{cut}");
}

#[test]
fn wallet_addresses() {
    // EIP-55's own test vectors.
    let table = [
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", Ok(())),
        ("0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359", Ok(())),
        ("0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", Ok(())),
        ("0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb", Ok(())),
        ("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", Ok(())),
        ("0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED", Ok(())),
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", Err(Reason::WalletChecksumMismatch)),
        ("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", Err(Reason::InvalidWalletAddr)),
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe", Err(Reason::InvalidWalletAddr)),
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAgd", Err(Reason::InvalidWalletAddr)),
        ("0x1234...abcd", Err(Reason::InvalidWalletAddr)),
    ];
    for (addr, want) in table {
        assert_eq!(check_wallet_addr(addr).map_err(|r| r.reason), want, "{addr}");
    }
}

#[test]
fn hostnames() {
    let table = [
        ("gpu-server-01", true),
        ("GPU-Server-01", true),
        ("a.b.c", true),
        ("1abc", true),
        ("", false),
        ("-abc", false),
        ("abc-", false),
        ("a..b", false),
        ("a_b", false),
        ("a b", false),
        (&"a".repeat(64), false),
        (&vec!["a".repeat(63); 4].join("."), false),
    ];
    for (host, ok) in table {
        assert_eq!(check_hostname(host).is_ok(), ok, "{host:?}");
    }
}

#[test]
fn public_ips() {
    let table = [
        ("123.45.67.89", false, true),
        ("8.8.8.8", false, true),
        ("2001:4860:4860::8888", false, true),
        ("10.0.0.5", false, false),
        ("172.16.0.1", false, false),
        ("192.168.1.1", false, false),
        ("100.64.0.1", false, false),
        ("127.0.0.1", false, false),
        ("169.254.1.1", false, false),
        ("0.0.0.0", false, false),
        ("::1", false, false),
        ("::", false, false),
        ("fe80::1", false, false),
        ("fd00::1", false, false),
        ("::ffff:10.0.0.1", false, false),
        ("224.0.0.1", false, false),
        ("255.255.255.255", false, false),
        ("10.0.0.5", true, true),
        ("127.0.0.1", true, true),
        ("0.0.0.0", true, false),
        ("not-an-ip", true, false),
        ("1.2.3", false, false),
    ];
    for (ip, allow, ok) in table {
        assert_eq!(check_public_ip(ip, allow).is_ok(), ok, "{ip} allow={allow}");
    }
}

#[test]
fn prices() {
    let table = [
        (0.5, Ok(())),
        (100.0, Ok(())),
        (100.01, Err(Reason::PriceAboveCeiling)),
        (0.000_001, Ok(())),
        (0.000_000_999, Err(Reason::PriceBelowFloor)),
        (4.9e-7, Err(Reason::PriceBelowFloor)),
        (5e-7, Err(Reason::PriceBelowFloor)),
        (f64::MIN_POSITIVE, Err(Reason::PriceBelowFloor)),
        (0.0, Err(Reason::InvalidPrice)),
        (-1.0, Err(Reason::InvalidPrice)),
        (f64::NAN, Err(Reason::InvalidPrice)),
        (f64::INFINITY, Err(Reason::InvalidPrice)),
    ];
    for (p, want) in table {
        assert_eq!(check_price(p, 100.0).map_err(|r| r.reason), want, "{p}");
    }
}

#[test]
fn timestamps() {
    let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let w = Duration::minutes(5);
    let table = [
        (None, true),
        (Some(now), true),
        (Some(now - Duration::minutes(5)), true),
        (Some(now + Duration::minutes(5)), true),
        (Some(now - Duration::minutes(5) - Duration::seconds(1)), false),
        (Some(now + Duration::hours(1)), false),
    ];
    for (ts, ok) in table {
        assert_eq!(check_timestamp(ts, now, w).is_ok(), ok, "{ts:?}");
    }
}

#[test]
fn a_spec_over_16_kib_is_refused() {
    let now = Utc::now();
    let mut reg = crate::messages::sample_registration("p1", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", 1);
    reg.timestamp = Some(now);
    let policy = ValidationPolicy::default();
    assert_eq!(validate_registration(&reg, &policy, now), Ok(()));
    // 64 GPUs with every optional field filled as a real machine would: accepted.
    let gpu = reg.spec.gpus[0].clone();
    reg.spec.gpus = (0..64)
        .map(|i| crate::messages::Gpu {
            index: Some(i),
            uuid: Some(format!("GPU-{:08x}-aaaa-bbbb-cccc-0123456789ab", i)),
            driver_ver: Some("550.54.15".into()),
            cuda_version: Some("12.4".into()),
            pci_bus_id: Some(format!("00000000:{i:02X}:00.0")),
            ..gpu.clone()
        })
        .collect();
    reg.spec.total_gpus = 64;
    reg.capacity.gpu_count = Some(1);
    assert_eq!(validate_registration(&reg, &policy, now), Ok(()));
    // The same with a padded field: refused before it is stored.
    reg.spec.cpu_model = Some("x".repeat(MAX_SPEC_BYTES));
    let got = validate_registration(&reg, &policy, now).map_err(|r| r.reason);
    assert_eq!(got, Err(Reason::SpecTooLarge));
}
