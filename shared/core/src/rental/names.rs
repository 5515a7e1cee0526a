//! Names of a rental's objects, from ids alone. A customer id and a job id are the customer's
//! own text: they are never put into a name or a label as they are (a label value has its own
//! grammar, and two ids must never map to one object); each name carries a hash of the id, and
//! the pod carries the job id itself in an annotation for people.

use sha2::{Digest, Sha256};

/// Label on every tenant namespace (`true`): what the admission policy and the NetworkPolicies
/// select.
pub const TENANT_LABEL: &str = "worldland.io/tenant";
/// Label on a rental's pod and its objects: the job's hash ([`job_hash`]).
pub const JOB_LABEL: &str = "worldland.io/job";
/// Annotation on a rental's pod: the job id as the customer gave it.
pub const JOB_ID_ANNOTATION: &str = "worldland.io/job-id";
/// Label on a rental's pod: the provider it was allocated on (the node must carry the same
/// `worldland.io/provider-id`).
pub const PROVIDER_LABEL: &str = "worldland.io/provider-id";

/// 16 hex digits of SHA-256 of `id`: short enough for a name, wide enough (64 bits) that no two
/// ids of one deployment meet.
fn hash16(id: &str) -> String {
    hex::encode(&Sha256::digest(id.as_bytes())[..8])
}

/// The job's hash, as its pod's [`JOB_LABEL`].
pub fn job_hash(job_id: &str) -> String {
    hash16(job_id)
}

/// The customer's namespace: `wl-tenant-<hash>` (26 characters, a valid DNS label).
pub fn tenant_namespace(customer_id: &str) -> String {
    format!("wl-tenant-{}", hash16(customer_id))
}

/// The job's pod (and its Secret and Service): `rental-<readable part>-<hash>`, a valid DNS
/// label of at most 63 characters; the readable part is the job id lower-cased, with anything
/// outside `[a-z0-9-]` dropped, cut to 30 characters.
pub fn pod_name(job_id: &str) -> String {
    let readable: String = job_id
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(30)
        .collect();
    let readable = readable.trim_matches('-');
    if readable.is_empty() {
        format!("rental-{}", hash16(job_id))
    } else {
        format!("rental-{readable}-{}", hash16(job_id))
    }
}

/// The Secret holding the rental's SSH public key.
pub fn ssh_secret_name(job_id: &str) -> String {
    format!("{}-ssh", pod_name(job_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_label(s: &str) -> bool {
        (1..=63).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn names_are_dns_labels_and_never_shared_by_two_ids() {
        let ids = [
            "job-1",
            "JOB-1",
            "job_1",
            "job 1",
            "",
            "---",
            "ünïcödé",
            &"x".repeat(500),
            "a/../../kube-system",
        ];
        let mut pods = std::collections::BTreeSet::new();
        let mut namespaces = std::collections::BTreeSet::new();
        for id in ids {
            let (pod, ns) = (pod_name(id), tenant_namespace(id));
            assert!(dns_label(&pod), "{id:?} -> {pod}");
            assert!(dns_label(&ns), "{id:?} -> {ns}");
            assert!(dns_label(&ssh_secret_name(id)), "{id:?}");
            assert!(pods.insert(pod), "{id:?}: pod name shared");
            assert!(namespaces.insert(ns), "{id:?}: namespace shared");
        }
        assert_eq!(pod_name("job-1"), pod_name("job-1"), "stable");
        assert!(pod_name("Job-42").starts_with("rental-job-42-"));
        assert_eq!(job_hash("job-1").len(), 16);
    }
}
