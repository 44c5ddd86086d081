use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kubernetes_image_puller::cli::{self, Cli, Command};

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
    let config_path = cli.config.as_deref();
    let mut stdout = std::io::stdout().lock();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => Ok(cli::check(config_path, &mut stdout)?),
        Command::Render { openshift } => {
            let config = cli::load_config(config_path)?;
            let yaml = cli::render_yaml(&config, openshift).context("cannot write the DaemonSets as YAML")?;
            std::io::Write::write_all(&mut stdout, yaml.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&kubernetes_image_puller::config::json_schema())?;
            std::io::Write::write_all(&mut stdout, format!("{schema}\n").as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Quota { nodes } => {
            let config = cli::load_config(config_path)?;
            std::io::Write::write_all(&mut stdout, cli::quota_table(&config, nodes).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => anyhow::bail!("the controller is not built yet"),
    }
}
