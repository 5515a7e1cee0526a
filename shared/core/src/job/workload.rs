//! The workload a job runs, read back from its item: what a rental controller builds the pod
//! from, with the job item alone.

use super::attr;
use super::closing::corrupt;
use crate::messages::jobs::{AllocateRequest, Workload};
use crate::state::{Item, StoreResult, Value};
use crate::workload::check_workload;

/// The workload stored with job `job_id`'s request ([`attr::REQUEST`]); `None` for a job made
/// before requests carried one (no image: nothing to run). It is checked again on the way out,
/// so nothing built from it rests on an item written by an older, looser broker; a request that
/// is missing, unreadable, or whose workload breaks the rules is a corrupt record.
pub fn workload(job_id: &str, item: &Item) -> StoreResult<Option<Workload>> {
    let text = item
        .get(attr::REQUEST)
        .and_then(Value::as_str)
        .ok_or_else(|| corrupt(job_id, "job without its request"))?;
    let req: AllocateRequest =
        serde_json::from_str(text).map_err(|e| corrupt(job_id, &format!("its request is not an AllocateRequest: {e}")))?;
    if req.workload.image.is_empty() {
        return Ok(None);
    }
    check_workload(&req.workload).map_err(|r| corrupt(job_id, &format!("its stored workload breaks a rule: {r}")))?;
    Ok(Some(req.workload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::jobs::EnvVar;

    fn item_with(request: Option<&str>) -> Item {
        request.map(|r| (attr::REQUEST.to_string(), Value::from(r))).into_iter().collect()
    }

    #[test]
    fn a_job_gives_back_the_workload_it_was_asked_to_run() {
        let w = Workload {
            command: vec!["python".into(), "-u".into()],
            args: vec!["train.py".into()],
            env: vec![EnvVar {
                name: "EPOCHS".into(),
                value: "3".into(),
            }],
            ..Workload::of_image("docker.io/library/python:3.12-slim")
        };
        let req = AllocateRequest {
            job_id: "j".into(),
            customer_id: "c".into(),
            gpu_model: None,
            gpus: 1,
            cpu_cores: 1,
            memory_mb: 1024,
            max_price_per_gpu_hour: None,
            duration_s: None,
            workload: w.clone(),
        };
        // As create_pending stores it.
        let stored = super::super::create_pending(&req, "k", "me", chrono::Utc::now());
        let item = crate::state::expr::apply(None, "id", "j", &stored.ops).unwrap();
        assert_eq!(workload("j", &item).unwrap(), Some(w));
    }

    #[test]
    fn old_jobs_have_none_and_bad_records_are_corrupt() {
        let old = r#"{"job_id":"j","customer_id":"c","gpus":1,"cpu_cores":1,"memory_mb":1024}"#;
        assert_eq!(workload("j", &item_with(Some(old))).unwrap(), None);
        let loose = r#"{"job_id":"j","customer_id":"c","gpus":1,"cpu_cores":1,"memory_mb":1024,"image":"p","env":[{"name":"NVIDIA_VISIBLE_DEVICES","value":"all"}]}"#;
        for (name, item) in [
            ("no request", item_with(None)),
            ("not JSON", item_with(Some("{nope"))),
            ("a workload that breaks a rule", item_with(Some(loose))),
        ] {
            assert!(
                matches!(workload("j", &item), Err(crate::state::StoreError::Corrupt { .. })),
                "{name}"
            );
        }
    }
}
