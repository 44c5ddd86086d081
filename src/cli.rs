//! Command line: clap definitions and the offline commands (check, render, schema, quota).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, ConfigError, Env};
use crate::quota;
use crate::render::{self, RenderOptions};

#[derive(Debug, Parser)]
#[command(name = "kubernetes-image-puller", version, about, long_about = None)]
pub struct Cli {
    /// Config: a TOML file, or a directory (a mounted ConfigMap) holding config.toml or upstream-style keys
    /// (IMAGES, NODE_SELECTOR, ...). Without it, the upstream environment variables define one set.
    #[arg(long, global = true, env = "CONFIG_FILE", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default): keep one DaemonSet per image set, reload the config on change.
    Run,
    /// Validate the config; print one line per set, or every problem found (exit 1).
    Check,
    /// Print the DaemonSets the config defines, as multi-document YAML (for GitOps or a dry run).
    Render {
        /// Leave user and group ids to OpenShift's SCC instead of setting 65532.
        #[arg(long)]
        openshift: bool,
    },
    /// Print the JSON Schema of the config file.
    Schema,
    /// Print the CPU and memory the namespace quota must allow: (limit) x (images) x (nodes), per set and in total.
    Quota {
        /// Number of nodes each set runs on.
        #[arg(long, required_unless_present = "from_cluster", conflicts_with = "from_cluster")]
        nodes: Option<u64>,
        /// Count each set's nodes in the current cluster (node selector and taints; needs `list nodes`).
        #[arg(long)]
        from_cluster: bool,
    },
    /// Per set, against the current kube context: DaemonSet present and up to date, nodes desired / ready /
    /// updated, every failing image with its nodes and reason, and quota shortfalls. Exit 1 if anything fails.
    Status {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Options of the controller (`run`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address of the HTTP server: /healthz, /readyz, /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080", global = true)]
    pub http_addr: std::net::SocketAddr,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,

    /// Take a Lease before writing, so that only one of several replicas acts.
    #[arg(long, env = "LEADER_ELECT", global = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub leader_elect: bool,

    /// Reconcile once, print the outcome and exit (non-zero if anything failed).
    #[arg(long, global = true)]
    pub once: bool,

    /// Delay between a config file change and its reload, in milliseconds (edits are batched).
    #[arg(long, env = "RELOAD_DEBOUNCE_MS", default_value = "200", global = true)]
    pub reload_debounce_ms: u64,
}

/// Loads the config named on the command line (or the env vars).
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    config::load(path, &Env)
}

/// `check`: one line per set, or all problems.
pub fn check(path: Option<&std::path::Path>, out: &mut impl Write) -> Result<ExitCode, std::io::Error> {
    match load_config(path) {
        Ok(config) => {
            writeln!(
                out,
                "config ok: namespace {}, {} set{}, health check every {}h",
                config.namespace,
                config.sets.len(),
                if config.sets.len() == 1 { "" } else { "s" },
                config.caching_interval_hours
            )?;
            for set in &config.sets {
                writeln!(out, "{}", set_summary(set))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            writeln!(out, "error: {e}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

pub fn set_summary(set: &config::ImageSet) -> String {
    let selector = if set.node_selector.is_empty() {
        "all nodes".to_owned()
    } else {
        set.node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let names: Vec<&str> = set.images.iter().map(|i| i.name.as_str()).collect();
    format!(
        "  {}: {} image{} ({}), nodes: {}, per container: cpu {}/{}, memory {}/{}",
        set.name,
        set.images.len(),
        if set.images.len() == 1 { "" } else { "s" },
        names.join(", "),
        selector,
        set.resources.cpu_request,
        set.resources.cpu_limit,
        set.resources.memory_request,
        set.resources.memory_limit,
    )
}

pub fn render_yaml(config: &Config, openshift: bool) -> Result<String, serde_saphyr::SerializeError> {
    let options = RenderOptions { openshift, owner: None };
    render::to_yaml(&render::render(config, &options))
}

pub fn quota_table(config: &Config, nodes: u64) -> Result<String, quota::QuotaError> {
    let (per_set, total) = quota::needs(config, |_| nodes)?;
    Ok(quota::table(&per_set, &total))
}

/// The quota table with each set's own node count.
pub fn quota_table_per_set(config: &Config, nodes: &[u64]) -> Result<String, quota::QuotaError> {
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

/// The `status` table.
pub fn status_table(report: &crate::controller::StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<8} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "SET", "PRESENT", "UP-TO-DATE", "DESIRED", "READY", "UPDATED", "NO-POD", "FAILING"
    );
    for h in &report.sets {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8}",
            h.set,
            yes(h.present),
            yes(h.up_to_date),
            h.desired,
            h.ready,
            h.updated,
            h.nodes_without_pod,
            h.failing.len()
        );
    }
    for h in &report.sets {
        if h.nodes_without_pod > 0 {
            let why = h.not_created.as_ref().map_or_else(
                || "no FailedCreate Event (yet): pods pending, or Events not readable".to_owned(),
                |n| format!("{} ({}): {}", n.reason, n.cause, n.message),
            );
            let _ = writeln!(
                out,
                "not created: set {} lacks a pod on {} of {} node(s): {why}",
                h.set, h.nodes_without_pod, h.desired
            );
        }
        for f in h.failing.iter().filter(|f| !f.image.is_empty()) {
            let more = f.node_count.saturating_sub(f.nodes.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "failing: set {} image {} ({}): {} on {} node(s): {}{}: {}",
                h.set,
                f.image,
                f.container,
                f.reason,
                f.node_count,
                f.nodes.join(", "),
                more,
                f.message
            );
        }
    }
    for s in &report.shortfalls {
        let _ = writeln!(out, "quota: {s}");
    }
    for t in &report.quota_totals {
        let _ = writeln!(out, "quota: {t}");
    }
    out
}
