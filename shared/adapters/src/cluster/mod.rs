//! Clusters implementing [`worldland_core::cluster::Cluster`].

#[cfg(feature = "kube")]
pub mod kube_api;
#[cfg(feature = "kube")]
mod kube_csr;
pub mod simulated;
