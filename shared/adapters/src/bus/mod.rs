//! Buses implementing [`worldland_core::bus::Bus`].

pub mod memory;
pub mod rabbit;
pub mod sqs;
