//! Command line: the clap definitions, and the run-only settings read from flags and environment variables.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

    #[command(flatten)]
    pub config_map: ConfigMapArg,
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
    /// Print the RBAC rules the code uses, one source for the chart and templates: a Role (namespaced) and a
    /// ClusterRole (nodes, optional). Each rule is commented with what it is for and whether it is optional.
    Rbac {
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: RbacFormat,
        /// metadata.name of the Role (the ClusterRole gets "-nodes" appended).
        #[arg(long, default_value = "kubernetes-image-puller")]
        name: String,
    },
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
pub enum RbacFormat {
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Options of the controller (`run`). Accepted before or after any command so that one argument list serves
/// every command, but only `run` reads them; their environment variables are read (and validated) only by
/// `run` too, so a pod's `LOG_FORMAT` or `HTTP_ADDR` never breaks `check`, `render`, `schema` or `quota`.
/// See [`RunArgs::resolve`].
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Address of the HTTP server: /healthz, /readyz, /metrics. [env: HTTP_ADDR] [default: 0.0.0.0:8080]
    #[arg(long, global = true, value_name = "ADDR")]
    pub http_addr: Option<std::net::SocketAddr>,

    /// Log format. [env: LOG_FORMAT] [default: text]
    #[arg(long, value_enum, global = true)]
    pub log_format: Option<LogFormat>,

    /// Take a Lease before writing, so that only one of several replicas acts. [env: LEADER_ELECT: true,
    /// false, 1, 0 or empty]
    #[arg(long, global = true)]
    pub leader_elect: bool,

    /// Reconcile once, print the outcome and exit (non-zero if anything failed).
    #[arg(long, global = true)]
    pub once: bool,

    /// Delay between a config file change and its reload, in milliseconds (edits are batched), 0 to 10000.
    /// [env: RELOAD_DEBOUNCE_MS] [default: 200]
    #[arg(long, global = true, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=RELOAD_DEBOUNCE_MAX_MS))]
    pub reload_debounce_ms: Option<u64>,
}

/// The run-only option naming the ConfigMap read through the API (kept apart from [`RunArgs`], whose
/// literal other code builds).
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigMapArg {
    /// Read the config from this ConfigMap through the API (a watch on that one name in the pod's namespace):
    /// edits apply at once instead of after kubelet's sync of the mounted file, which stays the fallback.
    /// Needs get, list, watch on configmaps (resourceNames may restrict it to this name). [env:
    /// CONFIG_MAP_NAME]
    #[arg(long, global = true, value_name = "NAME", value_parser = parse_config_map_name)]
    pub config_map: Option<String>,
}

/// A ConfigMap name: a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters,
/// starting and ending with a letter or digit), as the API server requires.
fn parse_config_map_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a ConfigMap name: expected lowercase letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit"
        ))
    }
}

/// Upper bound of `--reload-debounce-ms`: a longer wait would only delay a reload (SIGTERM never waits for
/// it); 10 s covers any editor or ConfigMap update burst.
pub const RELOAD_DEBOUNCE_MAX_MS: u64 = 10_000;
const DEFAULT_HTTP_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);
const DEFAULT_RELOAD_DEBOUNCE_MS: u64 = 200;

/// The controller's settings once flags and environment variables are combined (a flag wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    pub http_addr: std::net::SocketAddr,
    pub log_format: LogFormat,
    pub leader_elect: bool,
    pub once: bool,
    pub reload_debounce: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A run-only environment variable with a value `run` cannot use.
    #[error("invalid environment variable {name}={value:?}: expected {expected}")]
    Env {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl RunArgs {
    /// Fills what the command line left unset from the environment (`var` reads a variable; empty counts as
    /// unset), then the defaults. An unusable variable is an error naming it, the value and what is allowed.
    pub fn resolve(&self, var: impl Fn(&str) -> Option<String>) -> Result<RunSettings, CliError> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let http_addr = match (self.http_addr, get("HTTP_ADDR")) {
            (Some(a), _) => a,
            (None, Some(v)) => v.trim().parse().map_err(|_| CliError::Env {
                name: "HTTP_ADDR",
                value: v,
                expected: "an address with a port, e.g. 0.0.0.0:8080 or [::]:8080",
            })?,
            (None, None) => DEFAULT_HTTP_ADDR,
        };
        let log_format = match (self.log_format, get("LOG_FORMAT")) {
            (Some(f), _) => f,
            (None, Some(v)) => match v.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(CliError::Env {
                        name: "LOG_FORMAT",
                        value: v,
                        expected: "text or json",
                    });
                }
            },
            (None, None) => LogFormat::Text,
        };
        let leader_elect = self.leader_elect
            || match var("LEADER_ELECT") {
                None => false,
                Some(v) => parse_bool(&v).ok_or(CliError::Env {
                    name: "LEADER_ELECT",
                    value: v,
                    expected: "true, false, 1, 0 or empty",
                })?,
            };
        let reload_debounce_ms = match (self.reload_debounce_ms, get("RELOAD_DEBOUNCE_MS")) {
            (Some(ms), _) => ms,
            (None, Some(v)) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms <= RELOAD_DEBOUNCE_MAX_MS)
                .ok_or(CliError::Env {
                    name: "RELOAD_DEBOUNCE_MS",
                    value: v,
                    expected: "a whole number of milliseconds from 0 to 10000",
                })?,
            (None, None) => DEFAULT_RELOAD_DEBOUNCE_MS,
        };
        Ok(RunSettings {
            http_addr,
            log_format,
            leader_elect,
            once: self.once,
            reload_debounce: std::time::Duration::from_millis(reload_debounce_ms),
        })
    }
}

impl ConfigMapArg {
    /// The ConfigMap to read the config from: `--config-map`, else `CONFIG_MAP_NAME` (empty counts as unset).
    /// Run-only like [`RunArgs::resolve`]: only `run` calls this.
    pub fn resolve(&self, var: impl Fn(&str) -> Option<String>) -> Result<Option<String>, CliError> {
        if let Some(name) = &self.config_map {
            return Ok(Some(name.clone()));
        }
        let Some(value) = var("CONFIG_MAP_NAME").filter(|v| !v.trim().is_empty()) else {
            return Ok(None);
        };
        parse_config_map_name(value.trim())
            .map(Some)
            .map_err(|_| CliError::Env {
                name: "CONFIG_MAP_NAME",
                value,
                expected: "a ConfigMap name: lowercase letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit",
            })
    }
}

/// A boolean environment variable as Kubernetes manifests write it: true/false in any case, 1/0, or empty
/// (false). Anything else is refused rather than guessed.
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "" | "0" => Some(false),
        "1" => Some(true),
        v if v.eq_ignore_ascii_case("true") => Some(true),
        v if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}
