//! Typed bus messages: each type knows the routing key it travels under, so a publisher names
//! the message, never the key, and a consumer decodes it (size first, then JSON) in one place.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Bus, BusError, BusResult};
use crate::messages::jobs::{AllocateRequest, JobAllocated, JobRejected, JobReleased, ReleaseRequest};
use crate::messages::{topics, ProviderValidated, StreamEnvelope, MAX_ENTRY_BYTES};
use crate::refusal::Reason;
use crate::refusal::Rejection;

/// A message on the bus: its routing key, and the largest body a consumer decodes.
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The routing key it is published under (and bound by).
    const ROUTING_KEY: &'static str;
    /// A body above this is refused (`entry_too_large`) before it is parsed.
    const MAX_BODY_BYTES: usize = MAX_ENTRY_BYTES;

    /// The message from its body: too large is `entry_too_large`, not this type `malformed_json`;
    /// both refused for good, never retried.
    fn decode(body: &[u8]) -> Result<Self, Rejection> {
        if body.len() > Self::MAX_BODY_BYTES {
            let limit = Self::MAX_BODY_BYTES;
            return Err(Rejection::new(
                Reason::EntryTooLarge,
                format!("message is {} bytes; the limit is {limit}", body.len()),
            ));
        }
        serde_json::from_slice(body).map_err(|e| Rejection::new(Reason::MalformedJson, format!("not a {} message: {e}", Self::ROUTING_KEY)))
    }

    /// The message's body: JSON.
    fn encode(&self) -> BusResult<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| BusError::Encode(Self::ROUTING_KEY, e))
    }
}

/// Publishes `msg` under its own routing key; returns once the broker holds it (see [`Bus::publish`]).
pub async fn publish<M: Message>(bus: &dyn Bus, message_id: &str, msg: &M) -> BusResult<()> {
    bus.publish(M::ROUTING_KEY, message_id, &msg.encode()?).await
}

/// A `provider:registration` stream entry, forwarded by the bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegistrationReceived(pub StreamEnvelope);

/// A `provider:heartbeat` stream entry, forwarded by the bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HeartbeatReceived(pub StreamEnvelope);

/// An envelope carries a stream entry (checked against [`MAX_ENTRY_BYTES`] by its handler, which
/// may answer the provider) as JSON text: escaping can grow it up to six times, so the transport
/// bound is looser and only keeps absurd bodies from being parsed at all.
const MAX_ENVELOPE_BYTES: usize = 8 * MAX_ENTRY_BYTES;

macro_rules! messages {
    ($($ty:ty => $key:expr $(, max $max:expr)?;)+) => {
        $(impl Message for $ty {
            const ROUTING_KEY: &'static str = $key;
            $(const MAX_BODY_BYTES: usize = $max;)?
        })+
    };
}

messages! {
    RegistrationReceived => topics::REGISTRATION_RECEIVED, max MAX_ENVELOPE_BYTES;
    HeartbeatReceived => topics::HEARTBEAT_RECEIVED, max MAX_ENVELOPE_BYTES;
    ProviderValidated => topics::PROVIDER_VALIDATED;
    AllocateRequest => topics::JOB_ALLOCATE;
    ReleaseRequest => topics::JOB_RELEASE;
    JobAllocated => topics::JOB_ALLOCATED;
    JobRejected => topics::JOB_REJECTED;
    JobReleased => topics::JOB_RELEASED;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_too_large_or_not_the_type_is_refused_with_its_reason() {
        let big = vec![b' '; MAX_ENTRY_BYTES + 1];
        let code = |r: Result<ReleaseRequest, Rejection>| r.err().map(|r| r.reason.code());
        assert_eq!(code(ReleaseRequest::decode(&big)), Some("entry_too_large"));
        assert_eq!(code(ReleaseRequest::decode(b"{nope")), Some("malformed_json"));
        assert_eq!(code(ReleaseRequest::decode(br#"{"reason":"x"}"#)), Some("malformed_json"));
        assert!(ReleaseRequest::decode(br#"{"job_id":"j"}"#).is_ok());
    }

    #[test]
    fn an_envelope_is_its_stream_entry_on_the_wire() {
        let env = StreamEnvelope {
            stream: "s".into(),
            entry_id: "1-0".into(),
            data: "{}".into(),
            signature: None,
            timestamp: None,
            received_at_ms: None,
        };
        let body = RegistrationReceived(env.clone()).encode().unwrap();
        assert_eq!(body, serde_json::to_vec(&env).unwrap());
        assert_eq!(HeartbeatReceived::decode(&body).unwrap().0, env);
    }
}
