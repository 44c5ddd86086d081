//! `run`: the controller with its HTTP server and signal handling, or one pass with `--once`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::watch;

use super::{CommandError, Result, client};
use crate::cli::{Cli, RunSettings};
use crate::config::Env;
use crate::controller::{self, Controller, Settings};
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::telemetry;
use crate::webhook;

/// How long the controller may take to return after SIGTERM before the process exits anyway. Nothing is
/// lost by stopping mid-way: writes are idempotent applies redone by the next process, Events are
/// best-effort, and the DaemonSets stay in place. Keeps shutdown under a second in every state (a pending
/// Event post or Lease call against a hung API server, startup discovery, a reload debounce).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// What `run` needs from the command line and the environment, read before the runtime starts.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config_path: Option<PathBuf>,
    pub settings: RunSettings,
    pub config_map: Option<String>,
    /// The admission webhook's settings; `None` when it is off.
    pub webhook: Option<crate::cli::WebhookOptions>,
}

impl RunOptions {
    /// Run-only variables are read here, never by the offline commands.
    pub fn resolve(cli: &Cli, var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Ok(Self {
            config_path: cli.config.clone(),
            settings: cli.run.resolve(&var)?,
            config_map: cli.config_map.resolve(&var)?,
            webhook: cli.webhook.resolve(&var)?,
        })
    }
}

pub async fn run(options: RunOptions) -> Result<ExitCode> {
    let RunOptions {
        config_path,
        settings: args,
        config_map,
        webhook,
    } = options;
    telemetry::init(args.log_format);
    let settings = |path| Settings::from_env(path, args.reload_debounce, args.leader_elect);
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));

    if args.once {
        let controller = Controller::new(client().await?, settings(config_path), Box::new(Env), metrics, ready)
            .with_config_map(config_map);
        let report = controller::run_once(controller).await;
        print!("{report}");
        return Ok(if report.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    // Signal handlers first: from here on SIGTERM ends the process promptly, whatever it waits for.
    let stop = shutdown_on_signal().map_err(CommandError::Signals)?;
    let mut http_stop = stop.clone();
    // The probes answer from the start, also while the API server is slow to answer discovery.
    let (_, server) = http::serve(
        args.http_addr,
        HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        async move {
            let _ = http_stop.wait_for(|stopped| *stopped).await;
        },
    )
    .await?;
    let server = tokio::spawn(server);

    let controller_stop = stop.clone();
    let webhook_stop = stop.clone();
    let webhook_config_map = config_map.clone();
    // A 403 on the webhook's own calls shows in `kip_permission_denied` like the controller's.
    let webhook_denied = metrics.permission_denied.clone();
    let controller = async move {
        let client = client().await?;
        // The admission webhook beside the controller: it never stops the controller (a missing permission
        // is one warning and no webhook).
        if let Some(w) = webhook {
            let settings = webhook::WebhookSettings {
                addr: w.addr,
                endpoint: w.endpoint,
                cert_dir: w.cert_dir,
                secret: w.secret,
                configuration: w.configuration,
                validity: w.validity,
                config_map: webhook_config_map,
                namespace: std::env::var("POD_NAMESPACE").ok().filter(|v| !v.is_empty()),
            };
            tokio::spawn(webhook::run(client.clone(), settings, webhook_denied, webhook_stop));
        }
        let controller =
            Controller::new(client, settings(config_path), Box::new(Env), metrics, ready).with_config_map(config_map);
        controller.run(controller_stop).await?;
        Ok::<_, CommandError>(())
    };
    let mut stopped = stop;
    tokio::select! {
        result = controller => result?,
        () = async {
            let _ = stopped.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!(grace = ?SHUTDOWN_GRACE, "an API call was still pending at shutdown; abandoned"),
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
    Ok(ExitCode::SUCCESS)
}

/// A receiver that turns true at SIGTERM or SIGINT. The handlers (and a SIGHUP handler, so that a SIGHUP
/// before the controller listens for it does not kill the process) are installed before this returns.
fn shutdown_on_signal() -> std::io::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let hup = signal(SignalKind::hangup())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let _hup = hup;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down; DaemonSets stay in place");
        let _ = tx.send(true);
    });
    Ok(rx)
}
