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

    #[command(flatten)]
    pub webhook: WebhookArgs,
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

/// The run-only options of the validating admission webhook (kept apart from [`RunArgs`], whose literal
/// other code builds). Off unless `--webhook-addr` (or `WEBHOOK_ADDR`) is given. See [`WebhookArgs::resolve`].
#[derive(Debug, Clone, Default, Args)]
pub struct WebhookArgs {
    /// Serve the validating admission webhook (POST /validate, TLS with a self-managed CA) on this address:
    /// a broken config ConfigMap is then refused at `kubectl apply`, with line:col. Needs --webhook-service
    /// or --webhook-url. [env: WEBHOOK_ADDR]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub webhook_addr: Option<std::net::SocketAddr>,

    /// Register the webhook by URL (`clientConfig.url`, e.g. https://127.0.0.1:8443/validate), for
    /// development and tests outside a cluster; the certificate is made for the URL's host. [env:
    /// WEBHOOK_URL]
    #[arg(long, global = true, value_name = "URL", conflicts_with = "webhook_service")]
    pub webhook_url: Option<String>,

    /// Register the webhook as this Service in the pod's namespace (`clientConfig.service`, port 443); the
    /// certificate is made for NAME.NAMESPACE.svc. [env: WEBHOOK_SERVICE]
    #[arg(long, global = true, value_name = "NAME")]
    pub webhook_service: Option<String>,

    /// The Secret holding the webhook's CA and certificate. [env: WEBHOOK_SECRET] [default:
    /// kubernetes-image-puller-webhook-tls]
    #[arg(long, global = true, value_name = "NAME")]
    pub webhook_secret: Option<String>,

    /// The ValidatingWebhookConfiguration the controller creates or patches (only one labelled
    /// app.kubernetes.io/managed-by=kubernetes-image-puller). [env: WEBHOOK_CONFIGURATION] [default:
    /// kubernetes-image-puller]
    #[arg(long, global = true, value_name = "NAME")]
    pub webhook_configuration: Option<String>,

    /// Validity of the webhook's CA and certificate, in seconds; they are renewed when less than a third is
    /// left. [env: WEBHOOK_CERT_VALIDITY_SECONDS] [default: 31536000 (365 days)]
    #[arg(long, global = true, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(WEBHOOK_CERT_VALIDITY_MIN_SECONDS..))]
    pub webhook_cert_validity_seconds: Option<u64>,

    /// Serve the certificate in this directory (`tls.crt`, `tls.key`: a mounted Secret issued by
    /// cert-manager or OpenShift's service CA), read again when it changes, instead of a self-managed CA: the
    /// Secret and the ValidatingWebhookConfiguration (with its caBundle, injected by cert-manager's cainjector
    /// or the service CA) are then managed outside and never touched, and --webhook-url/-service/-secret/
    /// -configuration/-cert-validity-seconds are not used. [env: WEBHOOK_CERT_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub webhook_cert_dir: Option<std::path::PathBuf>,
}

/// Shortest `--webhook-cert-validity-seconds`: renewal then happens every 40 s.
pub const WEBHOOK_CERT_VALIDITY_MIN_SECONDS: u64 = 60;

/// The webhook's settings once flags and environment variables are combined (a flag wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookOptions {
    pub addr: std::net::SocketAddr,
    /// `None` only with `cert_dir`.
    pub endpoint: Option<crate::webhook::Endpoint>,
    /// `--webhook-cert-dir`: certificates and registration managed outside.
    pub cert_dir: Option<std::path::PathBuf>,
    pub secret: String,
    pub configuration: String,
    pub validity: std::time::Duration,
}

impl WebhookArgs {
    /// `None` when the webhook is off (no `--webhook-addr` / `WEBHOOK_ADDR`). Run-only like
    /// [`RunArgs::resolve`].
    pub fn resolve(&self, var: impl Fn(&str) -> Option<String>) -> Result<Option<WebhookOptions>, CliError> {
        let get = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let addr = match (self.webhook_addr, get("WEBHOOK_ADDR")) {
            (Some(a), _) => a,
            (None, Some(v)) => v.parse().map_err(|_| CliError::Env {
                name: "WEBHOOK_ADDR",
                value: v,
                expected: "an address with a port, e.g. 0.0.0.0:8443",
            })?,
            (None, None) => return Ok(None),
        };
        let url = self.webhook_url.clone().or_else(|| get("WEBHOOK_URL"));
        let service = self.webhook_service.clone().or_else(|| get("WEBHOOK_SERVICE"));
        let cert_dir = self
            .webhook_cert_dir
            .clone()
            .or_else(|| get("WEBHOOK_CERT_DIR").map(std::path::PathBuf::from));
        let endpoint = match (url, service) {
            // Registered outside (the chart's or template's configuration).
            (None, None) if cert_dir.is_some() => None,
            (Some(url), None) if url.starts_with("https://") => Some(crate::webhook::Endpoint::Url(url)),
            (None, Some(name)) if parse_config_map_name(&name).is_ok() && !name.contains('.') => {
                Some(crate::webhook::Endpoint::Service { name, port: None })
            }
            (url, service) => {
                return Err(CliError::Webhook(format!(
                    "the webhook needs exactly one of --webhook-url (https://...) or --webhook-service (a Service name), or --webhook-cert-dir (certificates and registration managed outside); got url {url:?}, service {service:?}"
                )));
            }
        };
        let validity = match (self.webhook_cert_validity_seconds, get("WEBHOOK_CERT_VALIDITY_SECONDS")) {
            (Some(s), _) => s,
            (None, Some(v)) => v
                .parse::<u64>()
                .ok()
                .filter(|s| *s >= WEBHOOK_CERT_VALIDITY_MIN_SECONDS)
                .ok_or(CliError::Env {
                    name: "WEBHOOK_CERT_VALIDITY_SECONDS",
                    value: v,
                    expected: "a whole number of seconds, at least 60",
                })?,
            (None, None) => crate::webhook::DEFAULT_VALIDITY.as_secs(),
        };
        Ok(Some(WebhookOptions {
            addr,
            endpoint,
            cert_dir,
            secret: self
                .webhook_secret
                .clone()
                .or_else(|| get("WEBHOOK_SECRET"))
                .unwrap_or_else(|| crate::webhook::DEFAULT_SECRET.to_owned()),
            configuration: self
                .webhook_configuration
                .clone()
                .or_else(|| get("WEBHOOK_CONFIGURATION"))
                .unwrap_or_else(|| crate::webhook::DEFAULT_CONFIGURATION.to_owned()),
            validity: std::time::Duration::from_secs(validity),
        }))
    }
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
    /// The webhook's options do not fit together.
    #[error("{0}")]
    Webhook(String),
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

#[cfg(test)]
mod webhook_tests {
    use super::*;
    use crate::webhook::Endpoint;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn the_webhook_is_off_without_an_address_and_needs_one_endpoint() {
        let none = WebhookArgs::default();
        assert_eq!(none.resolve(vars(&[])).unwrap(), None);
        let on = none
            .resolve(vars(&[
                ("WEBHOOK_ADDR", "0.0.0.0:8443"),
                ("WEBHOOK_SERVICE", "kip-metrics"),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(
            on.endpoint,
            Some(Endpoint::Service {
                name: "kip-metrics".into(),
                port: None
            })
        );
        assert_eq!(on.cert_dir, None);
        assert_eq!(on.secret, crate::webhook::DEFAULT_SECRET);
        assert_eq!(on.configuration, crate::webhook::DEFAULT_CONFIGURATION);
        assert_eq!(on.validity, crate::webhook::DEFAULT_VALIDITY);
        let flags = WebhookArgs {
            webhook_addr: Some("127.0.0.1:9443".parse().unwrap()),
            webhook_url: Some("https://127.0.0.1:9443/validate".into()),
            webhook_cert_validity_seconds: Some(120),
            ..WebhookArgs::default()
        };
        let url = flags.resolve(vars(&[])).unwrap().unwrap();
        assert_eq!(
            url.endpoint,
            Some(Endpoint::Url("https://127.0.0.1:9443/validate".into()))
        );
        assert_eq!(url.validity, std::time::Duration::from_secs(120));
        assert!(
            none.resolve(vars(&[("WEBHOOK_ADDR", "0.0.0.0:8443")])).is_err(),
            "no endpoint"
        );
        assert!(
            none.resolve(vars(&[
                ("WEBHOOK_ADDR", "0.0.0.0:8443"),
                ("WEBHOOK_URL", "http://x/validate")
            ]))
            .is_err(),
            "not https"
        );
        assert!(none.resolve(vars(&[("WEBHOOK_ADDR", "nope")])).is_err());
        assert!(
            none.resolve(vars(&[
                ("WEBHOOK_ADDR", "0.0.0.0:8443"),
                ("WEBHOOK_SERVICE", "s"),
                ("WEBHOOK_CERT_VALIDITY_SECONDS", "5"),
            ]))
            .is_err(),
            "too short a validity"
        );
    }

    #[test]
    fn a_cert_dir_needs_no_endpoint() {
        let none = WebhookArgs::default();
        let dir = none
            .resolve(vars(&[
                ("WEBHOOK_ADDR", "0.0.0.0:8443"),
                ("WEBHOOK_CERT_DIR", "/var/run/kip/webhook-tls"),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(dir.cert_dir, Some("/var/run/kip/webhook-tls".into()));
        assert_eq!(dir.endpoint, None);
        let flag = WebhookArgs {
            webhook_addr: Some("127.0.0.1:9443".parse().unwrap()),
            webhook_cert_dir: Some("/certs".into()),
            ..WebhookArgs::default()
        };
        let flag = flag
            .resolve(vars(&[("WEBHOOK_CERT_DIR", "/ignored")]))
            .unwrap()
            .unwrap();
        assert_eq!(flag.cert_dir, Some("/certs".into()), "the flag wins");
        assert!(
            none.resolve(vars(&[("WEBHOOK_CERT_DIR", "/certs")])).unwrap().is_none(),
            "off without an address"
        );
    }
}
