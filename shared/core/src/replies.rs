//! The port for answers to providers on `provider:response:<provider_id>` (Redis and in-memory
//! implementations live in `worldland-adapters`).

use async_trait::async_trait;

use crate::messages::jobs::MiningCommand;
use crate::messages::ProviderResponse;

/// Writing to a provider's response stream failed.
#[derive(Debug, thiserror::Error)]
#[error("writing the answer to provider {provider_id}: {source}")]
pub struct ReplyError {
    /// The provider the answer was for.
    pub provider_id: String,
    /// The underlying error.
    #[source]
    pub source: crate::BoxError,
}

/// The port for answers to providers on their response streams.
#[async_trait]
pub trait ProviderReplies: Send + Sync + 'static {
    /// Writes the answer to a registration on `provider:response:<provider_id>`.
    async fn reply(&self, provider_id: &str, response: &ProviderResponse) -> Result<(), ReplyError>;
    /// A command for the provider's SDK (`mining.stop`, `mining.resume`), on the same stream.
    async fn command(&self, provider_id: &str, command: &MiningCommand) -> Result<(), ReplyError>;
}
