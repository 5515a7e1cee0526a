//! The spec a provider registered, kept apart from the item every heartbeat rewrites.
//!
//! DynamoDB bills a write by the larger of the item's old and new size, so every attribute on
//! the provider's item is paid again by each heartbeat and each allocation. The provider's item
//! therefore keeps only the spec's working copy ([`working_copy`]: what the broker decides from
//! — host name, GPUs by name and memory, CPU cores, memory, disk, public IP); the spec as
//! registered, informational fields included (OS, kernel, CPU model, driver and CUDA versions,
//! GPU UUIDs, PCI ids, private IP), is written once per registration to its own item (key
//! `spec#<provider_id>`), which no heartbeat touches and people read (`worldland providers
//! show`). Like the reservations it has no `state` and no `hb_at`: it stays out of the state
//! index, and `#` keeps its key apart from every provider id.

use chrono::{DateTime, Utc};

use super::Transition;
use crate::labels::gpu_model_label;
use crate::messages::{Gpu, Spec};
use crate::state::{ms, Cond, ItemStore, Op, StoreResult, Table, Value};

/// Prefix of a registered spec's key in the providers table.
pub const KEY_PREFIX: &str = "spec#";

/// Attribute names of a registered-spec item.
pub mod attr {
    /// The spec as registered, as JSON.
    pub const SPEC: &str = "spec";
    /// The registration (stream entry id) it came with.
    pub const REGISTRATION_ID: &str = "registration_id";
    /// When it was stored (epoch ms).
    pub const STORED_AT: &str = "stored_at";
}

/// The key of `provider_id`'s registered-spec item.
pub fn key(provider_id: &str) -> String {
    format!("{KEY_PREFIX}{provider_id}")
}

/// Longest GPU name the working copy keeps as it is; a longer one (validation allows 256 bytes)
/// is kept as its model label, so 64 GPUs cost the provider's item at most a few KiB. The label
/// of that label is nearly always the label itself; where it is not (a label that is one noise
/// word, e.g. `Tesla`), every reader agrees anyway: the stored model label, the ledger, placement
/// and the node checks all read the working copy.
pub const MAX_WORKING_GPU_NAME: usize = 64;

/// A GPU's name as the working copy keeps it.
fn working_name(name: &str) -> String {
    if name.len() <= MAX_WORKING_GPU_NAME {
        name.to_string()
    } else {
        gpu_model_label(name)
    }
}

/// The part of a spec the broker decides from (validation, node name, model label, ledger,
/// placement, node checks, certificates, the join answer): the informational fields dropped.
pub fn working_copy(spec: &Spec) -> Spec {
    Spec {
        hostname: spec.hostname.clone(),
        os: None,
        kernel_ver: None,
        architecture: None,
        cpu_model: None,
        cpu_cores: spec.cpu_cores,
        cpu_threads: None,
        total_memory_mb: spec.total_memory_mb,
        gpus: spec
            .gpus
            .iter()
            .map(|g| Gpu {
                index: g.index,
                name: working_name(&g.name),
                memory_mb: g.memory_mb,
                uuid: None,
                driver_ver: None,
                cuda_version: None,
                pci_bus_id: None,
            })
            .collect(),
        total_gpus: spec.total_gpus,
        total_disk_gb: None,
        available_disk_gb: spec.available_disk_gb,
        public_ip: spec.public_ip.clone(),
        private_ip: None,
    }
}

/// Stores the spec registered with `registration_id`, unless that very registration's spec is
/// already stored (a redelivery writes nothing).
pub fn store_registered(spec: &Spec, registration_id: &str, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::Not(Box::new(Cond::eq(attr::REGISTRATION_ID, registration_id))),
        vec![
            Op::set(attr::SPEC, serde_json::to_string(spec).expect("spec serialises")),
            Op::set(attr::REGISTRATION_ID, registration_id),
            Op::set(attr::STORED_AT, ms(now)),
        ],
    )
}

/// The spec as registered, as JSON, with the registration it came with; `None` when none is
/// stored (a provider registered before specs were kept apart keeps its whole spec on its item).
pub async fn load_registered(store: &dyn ItemStore, provider_id: &str) -> StoreResult<Option<(String, String)>> {
    let Some(item) = store.get(Table::Providers, &key(provider_id)).await? else {
        return Ok(None);
    };
    let s = |a: &str| item.get(a).and_then(Value::as_str).map(str::to_string);
    Ok(s(attr::SPEC).zip(s(attr::REGISTRATION_ID)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::expr::{apply, eval};
    use crate::state::{Item, KEY_ATTR};

    fn run(t: &Transition, item: Option<&Item>) -> Option<Item> {
        eval(&t.cond, item).then(|| apply(item, KEY_ATTR, "spec#p1", &t.ops).unwrap())
    }

    fn full() -> Spec {
        let mut spec = crate::messages::sample_registration("p1", "0xab", 2).spec;
        spec.os = Some("Ubuntu 22.04.4 LTS".into());
        spec.kernel_ver = Some("6.5.0-41-generic".into());
        spec.cpu_model = Some("AMD EPYC 7763 64-Core Processor".into());
        spec.private_ip = Some("10.0.0.7".into());
        for g in &mut spec.gpus {
            g.uuid = Some("GPU-6d2f9a44-1b7e-4a7e-9c0e-3f0c4a8b2d11".into());
            g.driver_ver = Some("550.54.15".into());
            g.pci_bus_id = Some("00000000:01:00.0".into());
        }
        spec
    }

    #[test]
    fn the_working_copy_keeps_what_the_broker_decides_from_and_drops_the_rest() {
        let spec = full();
        let copy = working_copy(&spec);
        assert_eq!(copy.hostname, spec.hostname);
        assert_eq!(copy.public_ip, spec.public_ip);
        assert_eq!(
            (copy.cpu_cores, copy.total_memory_mb, copy.total_gpus),
            (spec.cpu_cores, spec.total_memory_mb, spec.total_gpus)
        );
        let names = |s: &Spec| s.gpus.iter().map(|g| (g.name.clone(), g.memory_mb)).collect::<Vec<_>>();
        assert_eq!(names(&copy), names(&spec));
        assert!(copy.os.is_none() && copy.cpu_model.is_none() && copy.private_ip.is_none());
        assert!(copy.gpus.iter().all(|g| g.uuid.is_none() && g.driver_ver.is_none()));
        let (a, b) = (serde_json::to_string(&copy).unwrap(), serde_json::to_string(&spec).unwrap());
        assert!(a.len() < b.len() / 2 + 100, "{} vs {}", a.len(), b.len());
        // Still valid: every check a registration passes reads the same from the copy.
        assert_eq!(working_copy(&copy), copy);
    }

    #[test]
    fn a_long_gpu_name_is_kept_as_its_model_label_which_names_the_same_model() {
        for name in [
            "NVIDIA GeForce RTX 4090",
            "NVIDIA H100 80GB HBM3",
            &format!("NVIDIA GeForce {}", "RTX 4090 ".repeat(20)),
            &format!("{} A100", "NVIDIA ".repeat(30)),
            &"x".repeat(256),
            "Tesla NVIDIA",
        ] {
            let kept = working_name(name);
            assert!(kept.len() <= MAX_WORKING_GPU_NAME, "{kept}");
            assert_eq!(gpu_model_label(&kept), gpu_model_label(name), "{name}");
            if name.len() <= MAX_WORKING_GPU_NAME {
                assert_eq!(kept, name);
            }
        }
    }

    #[test]
    fn the_stored_model_label_is_the_working_copys() {
        // A long name whose label is a single noise word: its label's label is `unknown`.
        let name = format!("{}Tesla.", "NVIDIA ".repeat(9));
        let mut reg = crate::messages::sample_registration("p1", "0xab", 1);
        reg.spec.gpus[0].name = name;
        let item = run(&super::super::register_pending(&reg, "1-0", chrono::Utc::now()), None).unwrap();
        let stored = item.get(super::super::attr::GPU_MODEL).and_then(Value::as_str).unwrap();
        let copy = working_copy(&reg.spec);
        assert_eq!(stored, gpu_model_label(&copy.gpus[0].name));
    }

    #[test]
    fn a_redelivered_registration_stores_nothing_and_a_new_one_replaces_the_spec() {
        let spec = full();
        let first = store_registered(&spec, "1-0", chrono::Utc::now());
        let item = run(&first, None).unwrap();
        assert!(run(&first, Some(&item)).is_none(), "the same registration again writes nothing");
        let second = store_registered(&working_copy(&spec), "2-0", chrono::Utc::now());
        let item = run(&second, Some(&item)).unwrap();
        assert_eq!(item.get(attr::REGISTRATION_ID).and_then(Value::as_str), Some("2-0"));
        assert!(key("p1").contains('#'));
    }
}
