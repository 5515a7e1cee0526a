//! Clusters implementing [`worldland_core::cluster::Cluster`].

#[cfg(feature = "kube")]
pub mod kube_api;
#[cfg(feature = "kube")]
mod kube_csr;
#[cfg(feature = "kube")]
pub mod kube_nodes;
#[cfg(feature = "kube")]
pub mod rbac_audit;
pub mod simulated;
