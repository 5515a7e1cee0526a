//! The approver as its container runs it: a service following CSRs with a watch.

use std::sync::Arc;

use worldland_tests::kubelet;
use worldland_tests::real_cluster::admin;

use super::{Broker, ONE_AT_A_TIME};

/// In a container the approver follows CSRs with a watch: a request is decided well within its
/// 30 s resync (and within kubeadm's five-minute wait for the TLS bootstrap), with no pass called
/// by the test; it stops on shutdown.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_container_approver_decides_a_new_request_through_its_watch() {
    use worldland_runtime::worker::Service;
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = Broker::new().await;
    let p = broker.approved_provider().await;
    let service = csr_approver::CsrApprover {
        ctx: Arc::new(csr_approver::Context {
            store: broker.store.clone(),
            cluster: broker.approver.cluster.clone(),
        }),
    };
    let (stop, rx) = tokio::sync::broadcast::channel(1);
    let running = tokio::spawn(async move { service.run(rx).await });
    let key = kubelet::key();
    let csr = broker.submit_own(&p, &key).await;
    let decided = kubelet::decision(admin().await, &csr, 10).await;
    assert!(decided.approved, "{decided:?}");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), running)
        .await
        .expect("stops on shutdown")
        .unwrap()
        .unwrap();
    broker.clean_up().await;
}
