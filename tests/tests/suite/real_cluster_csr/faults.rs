//! The approver when the cluster fails it: a decision whose write failed is made again by the next
//! pass, from the provider's record.

use std::sync::Arc;

use chrono::Utc;
use worldland_tests::faulty_cluster::FaultyCluster;
use worldland_tests::kubelet;
use worldland_tests::real_cluster::admin;

use super::{Broker, ONE_AT_A_TIME};

/// The approval is recorded on the provider before it is written to the cluster: when the write
/// fails (or its answer is lost) the next pass recognises its own record and approves the same
/// CSR, and the Node made the first time is found, not made twice.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn an_approval_whose_write_failed_is_written_by_the_next_pass() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = Broker::new().await;
    let p = broker.approved_provider().await;
    let key = kubelet::key();
    let csr = broker.submit_own(&p, &key).await;
    let failing = csr_approver::Context {
        store: broker.store.clone(),
        cluster: Arc::new(FaultyCluster::new(broker.approver.cluster.clone()).failing_decisions()),
    };
    let report = csr_approver::approve_pending(&failing, Utc::now()).await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert!(kubelet::undecided(admin().await, &csr).await);
    assert_eq!(broker.record(&p.provider_id).await.client_csr.as_deref(), Some(csr.as_str()));
    assert!(broker.decide(&csr).await.approved, "the next pass approves the recorded CSR");
    kubelet::certificate(admin().await, &csr, 30).await;
    broker.clean_up().await;
}
