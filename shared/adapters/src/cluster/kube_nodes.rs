//! Provider nodes' health through kube-rs: the Nodes carrying `worldland.io/provider-id`, one
//! bounded page at a time (`limit` + `continue`), each with its kubelet's Lease in
//! `kube-node-lease`. A page, Leases included, is bounded by [`PAGE_TIMEOUT`] on top of the
//! client's own connect and read timeouts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, Client};

use worldland_core::cluster::health::{ReadyCondition, ReadyStatus, NODE_LEASE_NAMESPACE};
use worldland_core::cluster::{ClusterError, ClusterResult, NodeHealth, NodeHealthPage};
use worldland_core::labels;

use super::kube_api::classify;

/// The most one page may take, its Nodes and their Leases together.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Lease reads in flight at once for one page.
const LEASE_READS: usize = 8;

fn chrono_of(t: k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t.as_millisecond())
}

/// A Node's part of its health: its labels and its Ready condition.
fn node_part(node: &Node) -> NodeHealth {
    let node_labels = node.metadata.labels.as_ref();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| ReadyCondition {
            status: ReadyStatus::parse(&c.status),
            since: c.last_transition_time.as_ref().and_then(|t| chrono_of(t.0)),
        });
    NodeHealth {
        name: node.metadata.name.clone().unwrap_or_default(),
        provider_id: node_labels.and_then(|l| l.get(labels::PROVIDER_ID)).cloned(),
        marked_offline: node_labels.and_then(|l| l.get(labels::STATUS)).map(String::as_str) == Some(labels::STATUS_OFFLINE),
        ready,
        lease_renewed: None,
    }
}

/// The `renewTime` of the Lease `kube-node-lease/<name>`; `None` when there is none.
async fn lease_renewed(client: &Client, name: &str) -> ClusterResult<Option<DateTime<Utc>>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let lease = leases.get_opt(name).await.map_err(classify)?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| s.renew_time).and_then(|t| chrono_of(t.0)))
}

/// A Node's health with its Lease's (owned, so that a page's reads can run together).
async fn with_lease(client: Client, mut health: NodeHealth) -> ClusterResult<NodeHealth> {
    health.lease_renewed = lease_renewed(&client, &health.name).await?;
    Ok(health)
}

/// A page's node with its Lease, or `None` (logged) when the Lease could not be read: that node
/// is judged on a later pass, the rest of the window now.
async fn with_lease_or_skip(client: Client, health: NodeHealth) -> Option<NodeHealth> {
    let name = health.name.clone();
    match with_lease(client, health).await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(node = %name, error = %e, "node's Lease not read: its health is judged on a later pass");
            None
        }
    }
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = ClusterResult<T>>) -> ClusterResult<T> {
    tokio::time::timeout(PAGE_TIMEOUT, f)
        .await
        .map_err(|_| ClusterError::unavailable(format!("{what}: no answer within {PAGE_TIMEOUT:?}")))?
}

/// One page of provider nodes from `cursor`, at most `limit` (at least one) of them.
pub(super) async fn page(client: &Client, cursor: Option<&str>, limit: u32) -> ClusterResult<NodeHealthPage> {
    bounded("provider nodes' health", async {
        let nodes: Api<Node> = Api::all(client.clone());
        // Nodes already marked offline are not listed: their providers are offline, nobody
        // judges them, and they must not fill the window.
        let selector = format!("{},{}!={}", labels::PROVIDER_ID, labels::STATUS, labels::STATUS_OFFLINE);
        let mut params = ListParams::default().labels(&selector).limit(limit.max(1));
        if let Some(c) = cursor {
            params = params.continue_token(c);
        }
        let listed = nodes.list(&params).await.map_err(classify)?;
        let next = listed.metadata.continue_.clone().filter(|c| !c.is_empty());
        let reads = listed.items.iter().map(node_part).map({
            let client = client.clone();
            move |h| with_lease_or_skip(client.clone(), h)
        });
        let healths: Vec<NodeHealth> = futures::stream::iter(reads.collect::<Vec<_>>())
            .buffered(LEASE_READS)
            .filter_map(std::future::ready)
            .collect()
            .await;
        Ok(NodeHealthPage { nodes: healths, next })
    })
    .await
}

/// One node's health; `None` when there is no such node.
pub(super) async fn one(client: &Client, name: &str) -> ClusterResult<Option<NodeHealth>> {
    bounded("node health", async {
        let nodes: Api<Node> = Api::all(client.clone());
        match nodes.get_opt(name).await.map_err(classify)? {
            Some(node) => Ok(Some(with_lease(client.clone(), node_part(&node)).await?)),
            None => Ok(None),
        }
    })
    .await
}
