use std::collections::BTreeMap;

use super::*;
use crate::job::{allocated, create_pending};
use crate::messages::jobs::AllocateRequest;
use crate::state::expr::apply;
use crate::state::KEY_ATTR;

fn request(job: &str, customer: &str, key: Option<&str>) -> AllocateRequest {
    let mut workload = Workload::of_image("docker.io/library/python:3.12-slim");
    workload.ssh_public_key = key.map(str::to_string);
    AllocateRequest {
        job_id: job.into(),
        customer_id: customer.into(),
        gpu_model: None,
        gpus: 2,
        cpu_cores: 8,
        memory_mb: 32_768,
        max_price_per_gpu_hour: None,
        duration_s: None,
        workload,
    }
}

fn allocated_job(req: &AllocateRequest) -> Item {
    let now = chrono::Utc::now();
    let pending = create_pending(req, "claim", "owner", now);
    let item = apply(None, KEY_ATTR, &req.job_id, &pending.ops).unwrap();
    let a = JobAllocated {
        job_id: req.job_id.clone(),
        customer_id: req.customer_id.clone(),
        provider_id: "provider-7".into(),
        node_name: "gpu-box-7-1a2b".into(),
        node_selector: BTreeMap::new(),
        gpu_model: "RTX-4090".into(),
        gpus: req.gpus,
        cpu_cores: req.cpu_cores,
        memory_mb: req.memory_mb,
        price_per_gpu_hour_micros: 500_000,
        mining_gpus_taken: 0,
    };
    apply(Some(&item), KEY_ATTR, &req.job_id, &allocated(&a, now.timestamp_millis(), None).ops).unwrap()
}

#[test]
fn a_rental_is_built_from_the_stored_job_alone_exactly_as_allocated() {
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl someone";
    let req = request("Job-42", "cust-1", Some(key));
    let spec = rental_spec("Job-42", &allocated_job(&req)).unwrap().unwrap();
    assert_eq!((spec.provider_id.as_str(), spec.node.as_str()), ("provider-7", "gpu-box-7-1a2b"));
    assert_eq!((spec.gpus, spec.cpu_cores, spec.memory_mb), (2, 8, 32_768));
    assert_eq!(spec.ephemeral_storage_mb, EPHEMERAL_STORAGE_MB);
    assert_eq!(spec.namespace, names::tenant_namespace("cust-1"));
    assert_eq!(spec.pod, names::pod_name("Job-42"));
    assert_eq!(spec.ssh_secret, Some(names::ssh_secret_name("Job-42")));
    assert_eq!(spec.workload, req.workload);
    // The same job gives the same rental, whoever builds it.
    assert_eq!(rental_spec("Job-42", &allocated_job(&req)).unwrap().unwrap(), spec);
    // No key, no Secret.
    let plain = rental_spec("job-43", &allocated_job(&request("job-43", "cust-1", None)))
        .unwrap()
        .unwrap();
    assert_eq!(plain.ssh_secret, None);
}

#[test]
fn a_job_without_its_allocation_is_corrupt_and_the_quota_is_the_sum_of_open_rentals() {
    let req = request("job-1", "cust-1", None);
    let now = chrono::Utc::now();
    let pending = apply(None, KEY_ATTR, "job-1", &create_pending(&req, "c", "o", now).ops).unwrap();
    assert!(matches!(rental_spec("job-1", &pending), Err(StoreError::Corrupt { .. })));
    let a = rental_spec("job-1", &allocated_job(&req)).unwrap().unwrap();
    let b = rental_spec("job-2", &allocated_job(&request("job-2", "cust-1", None)))
        .unwrap()
        .unwrap();
    let q = tenant_quota([&a, &b]);
    assert_eq!(
        q,
        TenantQuota {
            gpus: 4,
            cpu_cores: 16,
            memory_mb: 65_536,
            ephemeral_storage_mb: 2 * EPHEMERAL_STORAGE_MB,
            pods: 2
        }
    );
    assert_eq!(tenant_quota([]), TenantQuota::default());
}
