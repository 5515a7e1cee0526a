//! Whether a provider's node may be sold now: beyond Ready, its kubelet's Lease must not be stale
//! by the measure the sweeper's node-health pass marks offline by, so a provider marked offline
//! for its node does not come back, nor become available, while the node is still in trouble.

use chrono::{DateTime, Utc};
use worldland_core::cluster::health::unfit_to_sell;
use worldland_core::provider::ProviderRecord;
use worldland_core::worker::Failure;

use crate::Context;

/// Whether `rec`'s node is fit to sell at `now` (see [`unfit_to_sell`]); when it is not, why is
/// logged, and the next heartbeat looks again.
pub(crate) async fn node_fit_to_sell(rec: &ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<bool, Failure> {
    let health = ctx.cluster.node_health(&rec.node_name).await?;
    let unfit = match &health {
        Some(h) => unfit_to_sell(h, now, ctx.node_health),
        None => return Ok(false),
    };
    if let Some(symptom) = unfit {
        tracing::warn!(
            provider_id = %rec.provider_id,
            node = %rec.node_name,
            symptom = symptom.code(),
            lease_renewed = ?health.as_ref().and_then(|h| h.lease_renewed),
            "node not fit to sell (NotReady, or its kubelet's Lease stale); not available"
        );
    }
    Ok(unfit.is_none())
}
