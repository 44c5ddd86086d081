//! `quota`: prints the CPU and memory the namespace quota must allow, per set and in total.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::{CommandError, Result, client, load_config};
use crate::config::Config;
use crate::k8s::Cluster;
use crate::quota::{self, QuotaError};

/// `quota --nodes N`: every set on `nodes` nodes, offline.
pub fn for_nodes(path: Option<&Path>, nodes: u64, out: &mut impl Write) -> Result<ExitCode> {
    let config = load_config(path)?;
    out.write_all(table(&config, nodes)?.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `quota --from-cluster`: each set on the nodes of the current cluster it can run on (needs `list nodes`).
pub async fn from_cluster(path: Option<&Path>, out: &mut impl Write) -> Result<ExitCode> {
    let config = load_config(path)?;
    let cluster = Cluster::new(client().await?, &config.namespace);
    let counts = crate::status::matching_nodes(&cluster, &config)
        .await
        .map_err(CommandError::count_nodes)?;
    out.write_all(table_per_set(&config, &counts)?.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn table(config: &Config, nodes: u64) -> Result<String, QuotaError> {
    let (per_set, total) = quota::needs(config, |_| nodes)?;
    Ok(quota::table(&per_set, &total))
}

/// The quota table with each set's own node count.
pub fn table_per_set(config: &Config, nodes: &[u64]) -> Result<String, QuotaError> {
    let (per_set, total) = quota::needs(config, |s| {
        config
            .sets
            .iter()
            .position(|c| c.name == s.name)
            .and_then(|i| nodes.get(i).copied())
            .unwrap_or(0)
    })?;
    Ok(quota::table(&per_set, &total))
}
