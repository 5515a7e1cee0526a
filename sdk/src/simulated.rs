//! Simulated providers for the demo, the benchmarks and the tests: real keys, real signatures,
//! real sealed-box key pairs, and plausible machines.

use chrono::{DateTime, Utc};
use crypto_box::SecretKey;
use k256::ecdsa::SigningKey;
use worldland_core::messages::{Capacity, Gpu, Registration, Spec, StreamEnvelope};
use worldland_core::sealed::new_enc_keypair;
use worldland_core::signature::{address_of, sign_personal};

const MODELS: [(&str, u64); 6] = [
    ("NVIDIA GeForce RTX 4090", 24564),
    ("NVIDIA A100-SXM4-80GB", 81920),
    ("NVIDIA H100 80GB HBM3", 81559),
    ("Tesla T4", 15360),
    ("NVIDIA L40S", 46068),
    ("NVIDIA GeForce RTX 3090", 24576),
];

pub struct SimulatedProvider {
    pub provider_id: String,
    pub key: SigningKey,
    pub enc_secret: SecretKey,
    pub registration: Registration,
}

impl SimulatedProvider {
    /// Provider number `n`: deterministic machine, fresh keys.
    pub fn new(n: usize, now: DateTime<Utc>) -> Self {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let (enc_secret, enc_public) = new_enc_keypair();
        let (model, mem) = MODELS[n % MODELS.len()];
        let gpus = 1 + (n % 8) as u32;
        let cpu = 16 * gpus;
        let memory = 65536 * u64::from(gpus);
        let provider_id = format!("sim-provider-{n:05}");
        let registration = Registration {
            provider_id: provider_id.clone(),
            wallet_addr: address_of(key.verifying_key()),
            spec: Spec {
                hostname: format!("gpu-node-{n:05}"),
                os: Some("Ubuntu 22.04".into()),
                kernel_ver: Some("6.5.0".into()),
                architecture: Some("x86_64".into()),
                cpu_model: Some("AMD EPYC 7543".into()),
                cpu_cores: cpu,
                cpu_threads: Some(cpu * 2),
                total_memory_mb: memory,
                gpus: (0..gpus)
                    .map(|i| Gpu {
                        index: Some(i),
                        name: model.into(),
                        memory_mb: mem,
                        uuid: Some(format!("GPU-{n}-{i}")),
                        driver_ver: Some("550.54".into()),
                        cuda_version: Some("12.4".into()),
                        pci_bus_id: None,
                    })
                    .collect(),
                total_gpus: gpus,
                total_disk_gb: Some(2000),
                available_disk_gb: 1000,
                // 45.0.0.0–94.255.255.255 holds no private, shared or reserved range.
                public_ip: format!("{}.{}.{}.10", 45 + (n / 65536) % 50, (n / 256) % 256, n % 256),
                private_ip: Some("10.0.0.5".into()),
            },
            capacity: Capacity {
                gpu_count: Some(gpus),
                cpu_cores: Some(cpu * 4 / 5),
                memory_mb: Some(memory * 4 / 5),
                gpu_price_per_hour: 0.25 + (n % 10) as f64 * 0.1,
                cpu_price_per_hour: Some(0.01),
            },
            mining_config: None,
            agent_version: Some("sim-1.0".into()),
            timestamp: Some(now),
            enc_pubkey: Some(enc_public),
        };
        Self {
            provider_id,
            key,
            enc_secret,
            registration,
        }
    }

    /// The registration as a signed stream entry would reach the bus.
    pub fn envelope(&self, stream: &str, entry_id: &str) -> StreamEnvelope {
        signed_envelope(&self.registration, &self.key, stream, entry_id)
    }
}

pub fn signed_envelope(reg: &Registration, key: &SigningKey, stream: &str, entry_id: &str) -> StreamEnvelope {
    let data = serde_json::to_string(reg).expect("serialises");
    StreamEnvelope {
        stream: stream.into(),
        entry_id: entry_id.into(),
        signature: Some(sign_personal(key, data.as_bytes())),
        data,
        timestamp: None,
        received_at_ms: None,
    }
}
