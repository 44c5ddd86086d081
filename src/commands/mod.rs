//! The commands a user runs, one module each, and all of the program's printing.

use std::path::Path;

use crate::cli::CliError;
use crate::config::{self, Config, ConfigError, Env};
use crate::controller::{ControllerError, StatusError};
use crate::http::HttpError;
use crate::quota::QuotaError;

pub mod check;
pub mod quota;
pub mod rbac;
pub mod render;
pub mod run;
pub mod schema;
pub mod status;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The config file (or the variables standing in for it) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A run-only environment variable `run` cannot use.
    #[error(transparent)]
    Cli(#[from] CliError),
    /// `quota --nodes` too large to compute.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// `quota --from-cluster` could not list the nodes.
    #[error("cannot count nodes: {reason}: {source}")]
    CountNodes {
        reason: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write the DaemonSets as YAML")]
    Yaml(#[source] serde_saphyr::SerializeError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Writing to stdout failed (a closed pipe).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot set up the Kubernetes client (no in-cluster config and no usable kubeconfig)")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

impl CommandError {
    /// Says what went wrong listing nodes: permissions only when the API server said so (401/403).
    pub fn count_nodes(source: kube::Error) -> Self {
        let reason = match &source {
            kube::Error::Api(s) if s.code == 401 => "the API server did not accept the credentials",
            kube::Error::Api(s) if s.code == 403 => "not allowed to list nodes (the quota command needs `list nodes`)",
            kube::Error::Api(_) => "the API server refused the request",
            _ => "cannot reach the API server",
        };
        Self::CountNodes { reason, source }
    }
}

pub type Result<T, E = CommandError> = std::result::Result<T, E>;

/// Loads the config named on the command line (or the env vars).
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    config::load(path, &Env)
}

/// A client for the in-cluster config or the current kubeconfig context.
pub async fn client() -> Result<kube::Client> {
    kube::Client::try_default().await.map_err(CommandError::Client)
}
