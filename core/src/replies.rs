//! Answers to providers on `provider:response:<provider_id>`.
//!
//! Old agents create their consumer group (`sdk-group`) at `$` only after publishing, so an
//! answer written before that group exists would never reach them. The broker therefore creates
//! `sdk-group` at `0` itself before writing: the agent's own create then meets BUSYGROUP (which
//! the agents tolerate) and its `XREADGROUP >` still delivers every answer written since.

use async_trait::async_trait;

use crate::messages::jobs::MiningCommand;
use crate::messages::ProviderResponse;

#[derive(Debug, thiserror::Error)]
#[error("writing the answer to provider {provider_id}: {why}")]
pub struct ReplyError {
    pub provider_id: String,
    pub why: String,
}

#[async_trait]
pub trait ProviderReplies: Send + Sync + 'static {
    async fn reply(&self, provider_id: &str, response: &ProviderResponse) -> Result<(), ReplyError>;
    /// A command for the provider's SDK (`mining.stop`, `mining.resume`), on the same stream.
    async fn command(&self, provider_id: &str, command: &MiningCommand) -> Result<(), ReplyError>;
}
