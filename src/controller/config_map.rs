//! The config read through the API (`--config-map NAME`): a watch on that one ConfigMap (a `metadata.name`
//! field selector, so RBAC can restrict it with `resourceNames`), turned into "new config content" for the
//! same load, validation and last-good rules as the mounted file.
//!
//! Which source is in force: the ConfigMap once it has been read; before that (API unreachable, ConfigMap
//! missing, `configmaps` forbidden) the mounted file or env, said once. Rule for the two: while the ConfigMap
//! is the source and a config is in force, file changes are ignored. The mounted file is kubelet's copy of
//! the same object, up to 60–90 s behind, so reading it could only bring back an older version (or the
//! version just read); the file becomes the source again only when reading the ConfigMap is forbidden.
//! One exception: a ConfigMap rejected at start leaves no last good config, so the file (the version
//! before the broken edit) is loaded as the last good one until a valid edit arrives.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::*;
use crate::config::ConfigError;

/// How long the start waits for the ConfigMap before it takes the mounted file, so that an edit the file
/// does not have yet is not undone and redone at every start.
pub(super) const FIRST_READ_WAIT: Duration = Duration::from_secs(2);

/// What the watch saw.
#[derive(Debug)]
pub(super) enum Update {
    /// The ConfigMap as the API has it: listed when the watch (re)starts, or created or edited since.
    Content {
        version: String,
        data: BTreeMap<String, String>,
        regarding: ObjectReference,
    },
    /// Not found when the watch (re)started.
    Missing,
    Deleted,
    /// Refused (403) for `verb`: the watch has stopped; it starts again once a review grants it.
    Forbidden {
        verb: &'static str,
    },
    /// Any other failure; the watch retries with backoff.
    Failed(String),
}

/// The config version in force, as `status` and the `kip_config_info` metric show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigVersion {
    /// `configmap`, `file` or `env`.
    pub source: &'static str,
    /// The ConfigMap's resourceVersion, or `sha256:<12 hex>` of the file's (or variables') content.
    pub version: String,
}

impl std::fmt::Display for ConfigVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.source, self.version)
    }
}

/// The running watch; its task ends when this is dropped.
pub(super) struct Watch {
    rx: mpsc::Receiver<Update>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The state of the API source, kept apart from the rest of the controller.
#[derive(Default)]
pub(super) struct ApiConfig {
    /// `--config-map`; None: the API source is off.
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub watch: Option<Watch>,
    /// The ConfigMap has been read (and not forbidden since): it is the source; file changes are ignored.
    pub live: bool,
    /// Stopped by a 403 or not granted by the review; tried again after the next review grants it.
    pub forbidden: bool,
    /// "running from the mounted file" has been said.
    pub fallback_said: bool,
    /// "not found" or "deleted" has been said (again once it is back).
    pub gone_said: bool,
}

/// Watches `name` in `namespace`; updates arrive on the returned channel. A 403 ends the task (no retry
/// storm); other errors are retried by kube's watcher with backoff (0.8 s doubling to 30 s).
fn start(client: Client, namespace: &str, name: &str) -> Watch {
    let api = crate::k8s::config_maps(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listed = false;
        while let Some(event) = stream.next().await {
            let update = match event {
                Ok(watcher::Event::Init) => {
                    listed = false;
                    continue;
                }
                Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                    listed = true;
                    content(cm)
                }
                Ok(watcher::Event::InitDone) if listed => continue,
                Ok(watcher::Event::InitDone) => Update::Missing,
                Ok(watcher::Event::Delete(_)) => Update::Deleted,
                Err(e) => match forbidden_verb(&e) {
                    Some(verb) => {
                        let _ = tx.send(Update::Forbidden { verb }).await;
                        return;
                    }
                    None => Update::Failed(e.to_string()),
                },
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
    });
    Watch { rx, task }
}

fn content(cm: ConfigMap) -> Update {
    let regarding = cm.object_ref(&());
    let version = cm.resource_version().unwrap_or_default();
    // Binary data is not config; only `data` is read, as the mounted directory's text files are.
    Update::Content {
        version,
        data: cm.data.unwrap_or_default(),
        regarding,
    }
}

/// The RBAC verb of a refused list or watch.
fn forbidden_verb(e: &watcher::Error) -> Option<&'static str> {
    match e {
        watcher::Error::InitialListFailed(k) if crate::k8s::is_forbidden(k) => Some("list"),
        watcher::Error::WatchStartFailed(k) | watcher::Error::WatchFailed(k) if crate::k8s::is_forbidden(k) => {
            Some("watch")
        }
        watcher::Error::WatchError(s) if s.code == 403 => Some("watch"),
        _ => None,
    }
}

/// The next update; never resolves without a watch.
pub(super) async fn next(watch: &mut Option<Watch>) -> Option<Update> {
    match watch {
        Some(w) => w.rx.recv().await,
        None => std::future::pending().await,
    }
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The version of the file (or directory, or env vars) source: a hash of the content read.
pub(super) fn file_version(path: Option<&Path>, env: &dyn VarSource) -> ConfigVersion {
    let Some(path) = path else {
        let values: Vec<String> = config::UPSTREAM_VARS
            .iter()
            .map(|v| format!("{v}={}", env.get(v).unwrap_or_default()))
            .collect();
        let parts: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        return ConfigVersion {
            source: "env",
            version: short_hash(&parts),
        };
    };
    let mut files: Vec<Vec<u8>> = Vec::new();
    if path.is_dir() {
        for key in std::iter::once(&config::CONFIG_FILE_KEY).chain(config::UPSTREAM_VARS) {
            let mut part = key.as_bytes().to_vec();
            part.extend(std::fs::read(path.join(key)).unwrap_or_default());
            files.push(part);
        }
    } else {
        files.push(std::fs::read(path).unwrap_or_default());
    }
    let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    ConfigVersion {
        source: "file",
        version: short_hash(&parts),
    }
}

impl Controller {
    /// Reads the config from the ConfigMap `name` through the API (see the module comment).
    pub fn with_config_map(mut self, name: Option<String>) -> Self {
        if let Some(name) = &name {
            self.platform.access.watch_config_map(name);
        }
        self.cfg.api.name = name;
        self
    }

    /// The ConfigMap's namespace: the controller's own (`POD_NAMESPACE`), else the config's.
    fn config_map_namespace(&self) -> Option<String> {
        self.settings
            .pod_namespace
            .clone()
            .or_else(|| self.cfg.config.as_ref().map(|c| c.namespace.clone()))
    }

    /// Starts the watch when it is configured, not running, and allowed. Returns whether it runs.
    pub(super) async fn ensure_config_map_watch(&mut self) -> bool {
        let Some(name) = self.cfg.api.name.clone() else {
            return false;
        };
        if self.cfg.api.watch.is_some() {
            return true;
        }
        let Some(namespace) = self.cfg.api.namespace.clone().or_else(|| self.config_map_namespace()) else {
            return false;
        };
        if self.platform.review_due {
            self.review_permissions(&namespace).await;
        }
        let allowed = ["list", "watch"]
            .iter()
            .all(|v| self.platform.access.allows(v, "", "configmaps"));
        if !allowed {
            self.cfg.api.forbidden = true;
            self.fall_back("reading it is not allowed (configmaps list, watch)");
            return false;
        }
        if self.cfg.api.forbidden {
            tracing::info!(configmap = %name, "reading the ConfigMap is allowed now; watching it");
            self.cfg.api.forbidden = false;
        }
        self.cfg.api.watch = Some(start(self.client.clone(), &namespace, &name));
        self.cfg.api.namespace = Some(namespace);
        true
    }

    /// Says once that the mounted file (or env) is the source because the ConfigMap cannot be read.
    fn fall_back(&mut self, why: &str) {
        if self.cfg.api.fallback_said {
            return;
        }
        self.cfg.api.fallback_said = true;
        let name = self.cfg.api.name.as_deref().unwrap_or_default();
        let source = if self.settings.config_path.is_some() {
            "the mounted file"
        } else {
            "the environment"
        };
        tracing::warn!(configmap = %name, "cannot read ConfigMap {name} through the API: {why}; running from {source} (edits apply after kubelet's sync)");
    }

    /// Handles what the ConfigMap watch saw. Returns true when a new valid config took effect.
    pub(super) async fn on_config_map(&mut self, update: Update) -> bool {
        let name = self.cfg.api.name.clone().unwrap_or_default();
        match update {
            Update::Content {
                version,
                data,
                regarding,
            } => {
                if !self.cfg.api.live {
                    tracing::info!(configmap = %name, %version, "reading the config from ConfigMap {name} through the API; file changes are ignored from now on");
                }
                self.cfg.api.live = true;
                self.cfg.api.gone_said = false;
                self.cfg.api.fallback_said = false;
                let loaded = config::load_config_map(&name, &data, self.env.as_ref());
                let version = ConfigVersion {
                    source: "configmap",
                    version,
                };
                self.take(loaded, version, Some(regarding)).await
            }
            Update::Missing | Update::Deleted => {
                if !self.cfg.api.gone_said {
                    self.cfg.api.gone_said = true;
                    let what = if matches!(update, Update::Deleted) {
                        "deleted"
                    } else {
                        "not found"
                    };
                    let keeping = if self.cfg.config.is_some() {
                        "keeping the config in force, nothing deleted"
                    } else {
                        "no config in force yet"
                    };
                    tracing::warn!(configmap = %name, "ConfigMap {name} {what}: {keeping}");
                }
                if !self.cfg.api.live {
                    self.fall_back("it does not exist");
                }
                false
            }
            Update::Forbidden { verb } => {
                self.cfg.api.watch = None;
                self.cfg.api.forbidden = true;
                if self.platform.access.forbidden(verb, "", "configmaps") {
                    self.platform.review_due = true;
                }
                self.fall_back(&format!("{verb} configmaps is forbidden"));
                // The file is the source again: it is kubelet's copy of the same ConfigMap.
                let was_live = std::mem::replace(&mut self.cfg.api.live, false);
                was_live && self.reload().await
            }
            Update::Failed(e) => {
                tracing::debug!(configmap = %name, error = %e, "ConfigMap watch failed; retrying with backoff");
                if !self.cfg.api.live {
                    self.fall_back(&format!("the API server cannot be reached yet ({e})"));
                }
                false
            }
        }
    }

    /// `--once`: one GET of the ConfigMap (no watch); without it (missing, forbidden, unreachable) the
    /// mounted file is used, as at the start of `run`.
    pub(super) async fn read_config_map_once(&mut self) {
        let Some(name) = self.cfg.api.name.clone() else { return };
        let Some(namespace) = self.config_map_namespace() else {
            return;
        };
        if self.platform.review_due {
            self.review_permissions(&namespace).await;
        }
        if !self.platform.access.allows("get", "", "configmaps") {
            self.fall_back("reading it is not allowed (configmaps get)");
            return;
        }
        let api = crate::k8s::config_maps(self.client.clone(), &namespace);
        let update = match tokio::time::timeout(FIRST_READ_WAIT, api.get_opt(&name)).await {
            Ok(Ok(Some(cm))) => content(cm),
            Ok(Ok(None)) => Update::Missing,
            Ok(Err(e)) if crate::k8s::is_forbidden(&e) => Update::Forbidden { verb: "get" },
            Ok(Err(e)) => Update::Failed(e.to_string()),
            Err(_) => Update::Failed(format!("no answer within {FIRST_READ_WAIT:?}")),
        };
        self.on_config_map(update).await;
    }

    /// Waits up to [`FIRST_READ_WAIT`] for the ConfigMap at start. Returns false at shutdown.
    pub(super) async fn first_config_map_read(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        if self.settings.pod_namespace.is_none() || !self.ensure_config_map_watch().await {
            return true;
        }
        let update = tokio::select! {
            _ = shutdown.changed() => return false,
            u = tokio::time::timeout(FIRST_READ_WAIT, next(&mut self.cfg.api.watch)) => u,
        };
        if let Ok(Some(update)) = update {
            self.on_config_map(update).await;
        }
        true
    }

    /// Records the version in force (`status`, `kip_config_info`).
    pub(super) fn set_in_force(&mut self, version: ConfigVersion) {
        if self.cfg.version.as_ref() == Some(&version) {
            return;
        }
        self.metrics.config_info.clear();
        self.metrics
            .config_info
            .get_or_create(&crate::metrics::ConfigInfoLabel {
                source: version.source.into(),
                version: version.version.clone(),
            })
            .set(1);
        self.cfg.version = Some(version);
    }

    /// The one place a loaded config (or its rejection) is taken, whatever its source. A rejection is also
    /// recorded as a Warning Event on `regarding` (the ConfigMap), where `kubectl describe` shows it.
    pub(super) async fn take(
        &mut self,
        loaded: Result<Config, ConfigError>,
        version: ConfigVersion,
        regarding: Option<ObjectReference>,
    ) -> bool {
        match loaded {
            Ok(new) => self.accept(new, version).await,
            Err(e) => {
                let text = e.to_string();
                let fresh = self.cfg.rejected.as_deref() != Some(&text);
                self.reject(text.clone()).await;
                if fresh && let Some(regarding) = regarding {
                    let keeping = if self.cfg.config.is_some() {
                        "keeping the last good config, nothing changed"
                    } else {
                        "no config in force"
                    };
                    self.events
                        .on_object(
                            &regarding,
                            true,
                            "ConfigRejected",
                            format!("{text}\n({keeping}; version {version} rejected)"),
                        )
                        .await;
                }
                false
            }
        }
    }
}
