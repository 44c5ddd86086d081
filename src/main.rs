//! The binary's edge: parse the command line, dispatch to a command, turn errors into a message and an exit code.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kubernetes_image_puller::cli::{Cli, Command};
use kubernetes_image_puller::commands::{self, run::RunOptions};

/// How long runtime teardown may wait for blocking work (a DNS lookup) before the process exits.
const RUNTIME_TEARDOWN: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    kubernetes_image_puller::tune_allocator();
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

/// Dispatches to the command; the async ones run on one runtime built here.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_deref();
    let mut stdout = std::io::stdout().lock();
    let code = match &cli.command {
        Some(Command::Check) => commands::check::run(config, &mut stdout)?,
        Some(Command::Render { openshift }) => commands::render::run(config, *openshift, &mut stdout)?,
        Some(Command::Schema) => commands::schema::run(&mut stdout)?,
        Some(Command::Rbac { output, name }) => commands::rbac::run(*output, name, &mut stdout)?,
        Some(Command::Quota {
            nodes: Some(n),
            from_cluster: false,
        }) => commands::quota::for_nodes(config, *n, &mut stdout)?,
        Some(Command::Quota { .. }) => runtime()?.block_on(commands::quota::from_cluster(config, &mut stdout))?,
        Some(Command::Status { output }) => {
            runtime()?.block_on(commands::status::run(cli.config.clone(), *output, &mut stdout))?
        }
        Some(Command::Run) | None => {
            drop(stdout);
            let options = RunOptions::resolve(&cli, |name| {
                std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
            })?;
            let runtime = runtime()?;
            let result = runtime.block_on(commands::run::run(options));
            // Whatever is still pending (an abandoned API call, a DNS lookup) must not hold the exit.
            runtime.shutdown_timeout(RUNTIME_TEARDOWN);
            result?
        }
    };
    Ok(code)
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
