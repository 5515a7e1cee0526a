//! Buses implementing [`worldland_core::bus::Bus`].

pub mod memory;
#[cfg(feature = "rabbit")]
pub mod rabbit;
#[cfg(feature = "sqs")]
pub mod sqs;
