//! Config: where it comes from (TOML file, mounted ConfigMap directory, upstream env vars), how it is checked,
//! and the validated form the rest of the program uses.
//!
//! `load` is the one entry point: source → raw (`model`) → checked and resolved (`resolve`) → [`Config`].
//! A per-set field (one that `[defaults]` and each `[[sets]]` accept) is declared once, in `model.rs`; the
//! macro in `fields.rs` carries it to both structs, the merge and the env fallback.

mod affinity;
mod env;
// Before `model`, which uses its macro.
#[macro_use]
mod fields;
mod load;
pub mod model;
mod resolve;
pub mod rules;
mod toml_source;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Affinity, Toleration};

pub use env::{UPSTREAM_VARS, VarSource, parse_images};
pub use load::load_config_map;
pub use load::{CONFIG_FILE_KEY, Env, MAX_CONFIG_BYTES, load, load_from_vars, load_toml_str};
pub use model::{Refresh, json_schema};

/// Namespace used when neither the file nor NAMESPACE names one (the upstream README's default).
pub const DEFAULT_NAMESPACE: &str = "kubernetes-image-puller";
/// DaemonSet name used by the env-var fallback when DAEMONSET_NAME is unset.
pub const DEFAULT_DAEMONSET_NAME: &str = "kubernetes-image-puller";
/// Image providing `/usr/local/bin/kip-sleep` when neither the file nor KIP_IMAGE names one: this project's
/// image, published under the upstream name it replaces (also upstream's KIP_IMAGE default).
pub const DEFAULT_KIP_IMAGE: &str = "quay.io/eclipse/kubernetes-image-puller:next";
/// Name of the init container that installs the sleeper; no image may use it.
/// `refresh_check_interval` when the config gives none.
pub const DEFAULT_REFRESH_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15 * 60);
pub const SLEEPER_INIT_CONTAINER: &str = "kip-sleep-install";

/// A validated config: every value here has been checked and every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub namespace: String,
    pub caching_interval_hours: u32,
    /// How often sets with `refresh = "digest"` are compared with the registry.
    pub refresh_check_interval: std::time::Duration,
    pub kip_image: String,
    /// The puller's own Deployment, owner of the DaemonSets (so uninstall garbage-collects them).
    pub deployment_name: Option<String>,
    pub sets: Vec<ImageSet>,
    /// `[warm_gate]`: the node condition and the startup taint; None when the table is absent.
    pub warm_gate: Option<WarmGate>,
}

/// The warm gate in force (see `[warm_gate]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmGate {
    /// Key of the startup taint (effect NoSchedule) removed once a node is warm; None: the condition only.
    pub taint: Option<String>,
    /// How long a node may stay cold before its taint is removed anyway.
    pub timeout: std::time::Duration,
}

/// `[warm_gate] timeout` when the config gives none.
pub const DEFAULT_WARM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// One image set, with the defaults merged in. (`Default` is for building sets in code: the built-in
/// resources, no images; `load` never fills a missing field from it.)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageSet {
    /// DNS-1123 label; the DaemonSet's name.
    pub name: String,
    /// Sorted by container name.
    pub images: Vec<Image>,
    pub resources: Resources,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub image_pull_secrets: Vec<String>,
    pub priority_class_name: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub refresh: Refresh,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Container name in the cache pod.
    pub name: String,
    pub reference: String,
}

impl Image {
    /// Digest-pinned images never change, so they are never pulled again.
    pub fn is_pinned(&self) -> bool {
        self.reference.contains('@')
    }
}

/// Requests and limits of each cache container, as the user wrote them (already checked to parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
}

impl Default for Resources {
    /// The upstream README's documented defaults.
    fn default() -> Self {
        Self {
            cpu_request: ".05".into(),
            cpu_limit: ".2".into(),
            memory_request: "10Mi".into(),
            memory_limit: "20Mi".into(),
        }
    }
}

/// One thing wrong with a config: where (file:line:col, or an env var), which field, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [&self.location, &self.field, &self.message];
        let mut first = true;
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            if !first {
                f.write_str(": ")?;
            }
            f.write_str(part)?;
            first = false;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path exists but is not something to read a config from (a FIFO, a device, too large, not text).
    #[error("cannot read config {path}: {reason}")]
    Input { path: PathBuf, reason: InputReason },
    #[error("{origin}: {} problem{}:\n{}", problems.len(), if problems.len() == 1 { "" } else { "s" }, list(problems))]
    Invalid { origin: String, problems: Vec<Problem> },
}

/// Why a file was refused before parsing. Also the message of a problem naming a ConfigMap key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputReason {
    /// A FIFO, socket, device or directory: `kind` says which.
    NotRegular { kind: &'static str },
    /// `size` is the file's length, or the bytes read when it grew past the limit while being read.
    TooLarge { size: u64, limit: u64 },
    /// The first byte that is not UTF-8: 1-based line and column (in characters), 0-based byte offset.
    NotUtf8 {
        byte: u8,
        line: usize,
        column: usize,
        offset: usize,
    },
}

impl fmt::Display for InputReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRegular { kind } => write!(
                f,
                "it is {kind}, not a regular file: give a TOML file or a mounted ConfigMap directory"
            ),
            Self::TooLarge { size, limit } => write!(
                f,
                "it is {size} bytes, over the limit of {limit} bytes (1 MiB, the most a ConfigMap can hold)"
            ),
            Self::NotUtf8 {
                byte,
                line,
                column,
                offset,
            } => write!(
                f,
                "not UTF-8 text: byte 0x{byte:02X} at line {line}, column {column} (byte offset {offset}); save the file as UTF-8"
            ),
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            Self::Read { .. } | Self::Input { .. } => &[],
        }
    }
}
