//! What a rental's objects must be, from the job alone: the pod's place, image, resources and
//! key, and its tenant's quota. Built from the stored job — its request (the workload) and its
//! allocation (the provider, node and resources the ledger holds) — so a controller that
//! restarts, or a second one, builds exactly the same; the cluster adapter turns it into
//! Kubernetes objects.

use crate::messages::jobs::{JobAllocated, Workload};
use crate::state::{Item, StoreError, StoreResult, Value};

use crate::rental::names;

/// Ephemeral storage each rental requests (and is limited to), in MiB: the container's
/// writable layer and logs; a rental that needs more brings a volume (not offered yet).
pub const EPHEMERAL_STORAGE_MB: u64 = 20 * 1024;

/// One rental's objects, as the controller makes them.
#[derive(Debug, Clone, PartialEq)]
pub struct RentalSpec {
    /// The job id, as the customer gave it (an annotation on the pod).
    pub job_id: String,
    /// [`names::job_hash`] of it (the pod's job label).
    pub job_hash: String,
    /// The customer's namespace ([`names::tenant_namespace`]).
    pub namespace: String,
    /// The pod's name (also its Service's) ([`names::pod_name`]).
    pub pod: String,
    /// The Secret holding the SSH key, when there is one.
    pub ssh_secret: Option<String>,
    /// The provider it was allocated on; its node must carry this provider id.
    pub provider_id: String,
    /// The node the pod is bound to.
    pub node: String,
    /// What runs.
    pub workload: Workload,
    /// Requests equal to limits, exactly as allocated.
    pub gpus: u32,
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory, in MiB.
    pub memory_mb: u64,
    /// Ephemeral storage, in MiB ([`EPHEMERAL_STORAGE_MB`]).
    pub ephemeral_storage_mb: u64,
}

/// A tenant's quota: no more than its open allocations hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantQuota {
    /// `requests.nvidia.com/gpu`.
    pub gpus: u64,
    /// `requests.cpu` / `limits.cpu`, in cores.
    pub cpu_cores: u64,
    /// `requests.memory` / `limits.memory`, in MiB.
    pub memory_mb: u64,
    /// `requests.ephemeral-storage`, in MiB.
    pub ephemeral_storage_mb: u64,
    /// `pods`.
    pub pods: u64,
}

fn corrupt(job_id: &str, why: &str) -> StoreError {
    StoreError::Corrupt {
        key: job_id.to_string(),
        why: why.to_string(),
    }
}

/// The rental of an allocated job, from its stored item; `None` for a job that carries no
/// workload (made before workloads). A job whose allocation is missing or unreadable is corrupt.
pub fn rental_spec(job_id: &str, job: &Item) -> StoreResult<Option<RentalSpec>> {
    let Some(workload) = super::workload(job_id, job)? else {
        return Ok(None);
    };
    let allocation: JobAllocated = job
        .get(super::attr::ALLOCATION)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| corrupt(job_id, "allocated job without a readable allocation"))?;
    let pod = names::pod_name(job_id);
    Ok(Some(RentalSpec {
        job_id: job_id.to_string(),
        job_hash: names::job_hash(job_id),
        namespace: names::tenant_namespace(&allocation.customer_id),
        ssh_secret: workload.ssh_public_key.as_ref().map(|_| names::ssh_secret_name(job_id)),
        pod,
        provider_id: allocation.provider_id,
        node: allocation.node_name,
        workload,
        gpus: allocation.gpus,
        cpu_cores: allocation.cpu_cores,
        memory_mb: allocation.memory_mb,
        ephemeral_storage_mb: EPHEMERAL_STORAGE_MB,
    }))
}

/// The quota of a tenant whose open rentals are `open`: their sum, never more.
pub fn tenant_quota<'a>(open: impl IntoIterator<Item = &'a RentalSpec>) -> TenantQuota {
    open.into_iter().fold(TenantQuota::default(), |q, r| TenantQuota {
        gpus: q.gpus + u64::from(r.gpus),
        cpu_cores: q.cpu_cores + u64::from(r.cpu_cores),
        memory_mb: q.memory_mb + r.memory_mb,
        ephemeral_storage_mb: q.ephemeral_storage_mb + r.ephemeral_storage_mb,
        pods: q.pods + 1,
    })
}

#[cfg(test)]
mod tests;
