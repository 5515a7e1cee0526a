//! Clusters implementing [`worldland_core::cluster::Cluster`].

#[cfg(feature = "kube")]
pub mod kube_api;
pub mod simulated;
