//! The binary's edge: parse the command line, run a command, turn errors into a message and an exit code.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kubernetes_image_puller::cli::{self, Cli, CliError, Command, RunSettings};
use kubernetes_image_puller::config::Env;
use kubernetes_image_puller::controller::{self, Controller, Settings};
use kubernetes_image_puller::http::{self, HttpState};
use kubernetes_image_puller::metrics::Metrics;
use kubernetes_image_puller::telemetry;
use tokio::sync::watch;

/// How long the controller may take to return after SIGTERM before the process exits anyway. Nothing is
/// lost by stopping mid-way: writes are idempotent applies redone by the next process, Events are
/// best-effort, and the DaemonSets stay in place. Keeps shutdown under a second in every state (a pending
/// Event post or Lease call against a hung API server, startup discovery, a reload debounce).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);
/// How long runtime teardown may wait for blocking work (a DNS lookup) before the process exits.
const RUNTIME_TEARDOWN: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once. Many errors already end with their source's
/// text (`cannot listen on ...: Address in use (os error 98)`), which `{:#}` would print a second time.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
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
        Command::Rbac { output, name } => {
            let text = cli::rbac(output, &name)?;
            std::io::Write::write_all(&mut stdout, text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Quota { nodes, from_cluster } => {
            let config = cli::load_config(config_path.as_deref())?;
            let table = match nodes {
                Some(n) if !from_cluster => cli::quota_table(&config, n)?,
                _ => {
                    let runtime = runtime()?;
                    let counts = runtime.block_on(async {
                        let client = client().await?;
                        let cluster = kubernetes_image_puller::k8s::Cluster::new(client, &config.namespace);
                        kubernetes_image_puller::status::matching_nodes(&cluster, &config)
                            .await
                            .map_err(CliError::count_nodes)
                            .map_err(anyhow::Error::from)
                    })?;
                    cli::quota_table_per_set(&config, &counts)?
                }
            };
            std::io::Write::write_all(&mut stdout, table.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { output } => {
            let runtime = runtime()?;
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
            // Run-only variables are read here, never by the offline commands above.
            let settings = cli
                .run
                .resolve(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))?;
            let config_map = cli
                .config_map
                .resolve(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))?;
            let runtime = runtime()?;
            let result = runtime.block_on(run_controller(config_path, settings, config_map));
            // Whatever is still pending (an abandoned API call, a DNS lookup) must not hold the exit.
            runtime.shutdown_timeout(RUNTIME_TEARDOWN);
            result
        }
    }
}

/// glibc's malloc, set to give memory back: blocks of 64 KiB and more (list pages, request bodies) get
/// their own mapping, returned to the system when freed, instead of the default threshold that rises
/// after each such free until large blocks stay in a heap that is seldom trimmed; and one arena for all
/// threads instead of one per thread. Measured with benches/process.rs: the RSS stays flat from 3 to
/// 1,000 nodes (mimalloc 0.1.52, tried as the global allocator, held 2-5 MiB more).
#[allow(unsafe_code)] // mallopt is a C function; see SAFETY.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; it is called before any other thread exists. A
    // refused value (0 returned) leaves the default, which is still correct, only larger.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // musl's malloc (the static build of the Dockerfile) already unmaps freed large blocks.
}

/// The async runtime of every command that talks to the API. Two workers whatever the node's core count:
/// the controller waits on the network almost all the time, and each idle worker still costs its stack
/// and allocator caches (measured by benches/process.rs: 16 workers add 0.4-0.9 MiB of RSS).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A client for the in-cluster config or the current kubeconfig context.
async fn client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default()
        .await
        .context("cannot set up the Kubernetes client (no in-cluster config and no usable kubeconfig)")
}

async fn run_controller(
    config_path: Option<std::path::PathBuf>,
    args: RunSettings,
    config_map: Option<String>,
) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log_format);
    let settings = |path| Settings::from_env(path, args.reload_debounce, args.leader_elect);
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));

    if args.once {
        let controller = Controller::new(client().await?, settings(config_path), Box::new(Env), metrics, ready)
            .await
            .with_config_map(config_map);
        let ok = controller::run_once(controller).await;
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }

    // Signal handlers first: from here on SIGTERM ends the process promptly, whatever it waits for.
    let stop = shutdown_on_signal().context("cannot install signal handlers")?;
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
    let controller = async move {
        let controller = Controller::new(client().await?, settings(config_path), Box::new(Env), metrics, ready)
            .await
            .with_config_map(config_map);
        controller.run(controller_stop).await?;
        anyhow::Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_names_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(98);
        let text = io.to_string();
        // A message that already ends with its source, as thiserror's `{source}` in a message does.
        let e = anyhow::Error::new(io).context(format!("cannot listen on 127.0.0.1:80: {text}"));
        assert_eq!(error_chain(&e), format!("cannot listen on 127.0.0.1:80: {text}"));
        assert_eq!(error_chain(&e).matches("(os error 98)").count(), 1);
        // A context that does not include it: the cause is added once.
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(2)).context("cannot read x");
        assert_eq!(error_chain(&e), "cannot read x: No such file or directory (os error 2)");
    }
}
