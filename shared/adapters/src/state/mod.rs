//! Stores implementing [`worldland_core::state::ItemStore`].

pub mod counting;
#[cfg(feature = "dynamo")]
pub mod dynamo;
pub mod memory;

#[cfg(any(test, feature = "test-support"))]
pub mod contract;
