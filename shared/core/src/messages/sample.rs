//! A plain registration for the crate's unit tests.

use super::*;

/// A plain registration for the crate's unit tests: `gpus` × RTX 4090, 8 cores per GPU, 32 GiB
/// per GPU, a public IP, no offer limits.
pub(crate) fn sample_registration(provider_id: &str, wallet: &str, gpus: u32) -> Registration {
    let gpu = Gpu {
        index: None,
        name: "NVIDIA GeForce RTX 4090".into(),
        memory_mb: 24564,
        uuid: None,
        driver_ver: None,
        cuda_version: None,
        pci_bus_id: None,
    };
    Registration {
        provider_id: provider_id.into(),
        wallet_addr: wallet.into(),
        spec: Spec {
            hostname: "GPU-01".into(),
            os: None,
            kernel_ver: None,
            architecture: None,
            cpu_model: None,
            cpu_cores: 8 * gpus,
            cpu_threads: None,
            total_memory_mb: 32768 * u64::from(gpus),
            gpus: vec![gpu; gpus as usize],
            total_gpus: gpus,
            total_disk_gb: None,
            available_disk_gb: 100,
            public_ip: "8.8.8.8".into(),
            private_ip: None,
        },
        capacity: Capacity {
            gpu_count: None,
            cpu_cores: None,
            memory_mb: None,
            gpu_price_per_hour: 0.5,
            cpu_price_per_hour: None,
        },
        mining_config: None,
        agent_version: None,
        timestamp: None,
        enc_pubkey: None,
    }
}
