use super::*;

#[test]
fn parses_the_agents_registration_and_ignores_unknown_fields() {
    let data = r#"{"provider_id":"p-1","wallet_addr":"0xab","spec":{"hostname":"h","cpu_cores":32,
        "total_memory_mb":131072,"gpus":[{"index":0,"name":"NVIDIA GeForce RTX 4090","memory_mb":24564,
        "uuid":"GPU-1","future_field":1}],"total_gpus":1,"available_disk_gb":500,"public_ip":"1.2.3.4"},
        "capacity":{"gpu_count":1,"gpu_price_per_hour":0.5},"new_top_level":{"x":1}}"#;
    let reg: Registration = serde_json::from_str(data).unwrap();
    assert_eq!(reg.spec.gpus[0].memory_mb, 24564);
    assert_eq!(reg.capacity.gpu_count, Some(1));
    assert!(reg.timestamp.is_none());
}

#[test]
fn accepts_the_product_description_gpu_spelling() {
    let gpu: Gpu = serde_json::from_str(r#"{"name":"NVIDIA GeForce RTX 4090","memory":24576}"#).unwrap();
    assert_eq!(gpu.memory_mb, 24576);
}

#[test]
fn rejection_has_the_agents_shape() {
    let v = serde_json::to_value(ProviderResponse::rejected("bad")).unwrap();
    assert_eq!(v, serde_json::json!({"success": false, "status": "rejected", "message": "bad"}));
}

#[test]
fn sealed_join_debug_hides_the_token() {
    let s = SealedJoin {
        join_token: "abcdef.0123456789abcdef".into(),
        join_command: "kubeadm join".into(),
    };
    assert!(!format!("{s:?}").contains("abcdef"));
}
