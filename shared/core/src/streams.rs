//! Redis stream names. The agents in the field use fixed names; a prefix (empty in production)
//! lets tests and side-by-side deployments share one Redis.

/// Names of the Redis streams shared with the agents, under an optional prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamNames {
    /// Put in front of every stream name; empty in production.
    pub prefix: String,
}

/// The consumer group the agents read their answers with.
pub const AGENT_RESPONSE_GROUP: &str = "sdk-group";

impl StreamNames {
    /// Stream names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }
    /// `provider:registration`: the agents' registrations.
    pub fn registration(&self) -> String {
        format!("{}provider:registration", self.prefix)
    }
    /// `provider:heartbeat`: the agents' heartbeats.
    pub fn heartbeat(&self) -> String {
        format!("{}provider:heartbeat", self.prefix)
    }
    /// `provider:response:<provider_id>`: answers and commands for one provider, read by its agent.
    pub fn response(&self, provider_id: &str) -> String {
        format!("{}provider:response:{provider_id}", self.prefix)
    }
    /// The SDKs' acknowledgements of commands (`mining.stop`, `mining.resume`).
    pub fn command_ack(&self) -> String {
        format!("{}provider:command-ack", self.prefix)
    }
    /// Entries the bridge could not forward, each with its reason.
    pub fn dead_letter(&self) -> String {
        format!("{}provider:deadletter", self.prefix)
    }
}
