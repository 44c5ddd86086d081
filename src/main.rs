//! The binary's edge: parse the command line, run a command, turn errors into a message and an exit code.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kubernetes_image_puller::cli::{self, Cli, Command, RunArgs};
use kubernetes_image_puller::config::Env;
use kubernetes_image_puller::controller::{self, Controller, Settings};
use kubernetes_image_puller::http::{self, HttpState};
use kubernetes_image_puller::metrics::Metrics;
use kubernetes_image_puller::telemetry;
use tokio::sync::watch;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli.config.clone();
    let mut stdout = std::io::stdout().lock();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => Ok(cli::check(config_path.as_deref(), &mut stdout)?),
        Command::Render { openshift } => {
            let config = cli::load_config(config_path.as_deref())?;
            let yaml = cli::render_yaml(&config, openshift).context("cannot write the DaemonSets as YAML")?;
            std::io::Write::write_all(&mut stdout, yaml.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&kubernetes_image_puller::config::json_schema())?;
            std::io::Write::write_all(&mut stdout, format!("{schema}\n").as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Quota { nodes, from_cluster } => {
            let config = cli::load_config(config_path.as_deref())?;
            let table = match nodes {
                Some(n) if !from_cluster => cli::quota_table(&config, n)?,
                _ => {
                    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
                    let counts = runtime.block_on(async {
                        let client = client().await?;
                        let cluster = kubernetes_image_puller::k8s::Cluster::new(client, &config.namespace);
                        kubernetes_image_puller::status::matching_nodes(&cluster, &config)
                            .await
                            .context("cannot count nodes (needs permission to list nodes)")
                    })?;
                    cli::quota_table_per_set(&config, &counts)?
                }
            };
            std::io::Write::write_all(&mut stdout, table.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { output } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let report = runtime.block_on(async {
                let settings = Settings::from_env(config_path.clone(), Duration::from_millis(200), false);
                let mut controller = Controller::new(
                    client().await?,
                    settings,
                    Box::new(Env),
                    Arc::new(Metrics::default()),
                    Arc::new(AtomicBool::new(false)),
                )
                .await;
                anyhow::Ok(controller.status().await?)
            })?;
            let text = match output {
                cli::OutputFormat::Table => cli::status_table(&report),
                cli::OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
            };
            std::io::Write::write_all(&mut stdout, text.as_bytes())?;
            Ok(if report.is_healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Run => {
            drop(stdout);
            let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(run_controller(config_path, cli.run))
        }
    }
}

/// A client for the in-cluster config or the current kubeconfig context.
async fn client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default().await.map_err(|e| {
        // kube's message repeats its whole cause chain; the first line says what is wrong.
        let first = e.to_string().split(": ").take(2).collect::<Vec<_>>().join(": ");
        anyhow::anyhow!("cannot reach Kubernetes (no in-cluster config and no usable kubeconfig context): {first}")
    })
}

async fn run_controller(config_path: Option<std::path::PathBuf>, args: RunArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log_format);
    let client = client().await?;
    let settings = Settings::from_env(
        config_path,
        Duration::from_millis(args.reload_debounce_ms),
        args.leader_elect,
    );
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let controller = Controller::new(client, settings, Box::new(Env), metrics.clone(), ready.clone()).await;

    if args.once {
        let ok = controller::run_once(controller).await;
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let (_, server) = http::serve(args.http_addr, HttpState { metrics, ready }, async move {
        let _ = http_stop.changed().await;
    })
    .await?;
    let server = tokio::spawn(server);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down; DaemonSets stay in place");
        let _ = stop_tx.send(true);
    });
    controller.run(stop_rx).await?;
    // The server stops with the same signal; don't let a slow client hold the exit.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
