//! What one worker takes off its queue, as one enum (mini-redis' `Command`): decoded from the
//! routing key and body in one place, so a worker matches on variants, never on strings.

use crate::refusal::Reason;
use crate::refusal::Rejection;

/// A worker's inbound messages. Written with [`inbound!`](crate::inbound), which keeps the
/// queue's bindings and the decoding in step with the variants.
pub trait Inbound: Sized + Send + 'static {
    /// The worker's name; its queue is named after it.
    const QUEUE: &'static str;
    /// The routing keys bound to its queue: one per variant.
    const KEYS: &'static [&'static str];
    /// The message delivered under `routing_key`; a key it does not take, a body too large or
    /// one that does not decode is refused with its reason.
    fn decode(routing_key: &str, body: &[u8]) -> Result<Self, Rejection>;
}

/// The refusal of a routing key a worker does not take.
pub fn unknown_key(queue: &str, routing_key: &str) -> Rejection {
    Rejection::new(Reason::InvalidRequest, format!("{queue} does not handle {routing_key}"))
}

/// Declares a worker's inbound enum: one variant per [`Message`](crate::bus::Message) type, its
/// queue named after the worker.
///
/// ```text
/// inbound! {
///     /// What the allocator takes.
///     pub enum ToAllocator for "allocator" { Allocate(AllocateRequest), Release(ReleaseRequest) }
/// }
/// ```
#[macro_export]
macro_rules! inbound {
    ($(#[$meta:meta])* $vis:vis enum $name:ident for $queue:literal {
        $($(#[$vmeta:meta])* $variant:ident($ty:ty)),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant($ty)),+
        }

        impl $crate::bus::Inbound for $name {
            const QUEUE: &'static str = $queue;
            const KEYS: &'static [&'static str] = &[$(<$ty as $crate::bus::Message>::ROUTING_KEY),+];
            fn decode(routing_key: &str, body: &[u8]) -> Result<Self, $crate::refusal::Rejection> {
                $(if routing_key == <$ty as $crate::bus::Message>::ROUTING_KEY {
                    return <$ty as $crate::bus::Message>::decode(body).map(Self::$variant);
                })+
                Err($crate::bus::unknown_key($queue, routing_key))
            }
        }
    };
}
