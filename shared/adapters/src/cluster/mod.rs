//! Clusters implementing [`worldland_core::cluster::Cluster`].

pub mod kube_api;
pub mod simulated;
