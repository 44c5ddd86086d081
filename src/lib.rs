//! kubernetes-image-puller: keeps container images cached on Kubernetes nodes, one DaemonSet per image set.
//!
//! Data flows one way: file → parse → validate ([`config`]) → desired DaemonSets ([`render`], pure) →
//! apply/prune against the API → status.

pub mod cli;
pub mod commands;
pub mod config;
pub mod controller;
pub mod freshness;
pub mod health;
pub mod http;
pub mod k8s;
pub mod labels;
pub mod metrics;
pub mod quota;
pub mod rbac;
pub mod reconcile;
pub mod registry;
pub mod render;
pub mod scheduling;
pub mod status;
pub mod telemetry;
pub mod warmth;
pub mod watch;
pub mod webhook;
