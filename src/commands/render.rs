//! `render`: prints the DaemonSets the config defines as multi-document YAML (GitOps, a dry run).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::{CommandError, Result, load_config};
use crate::config::Config;
use crate::render::{self, RenderOptions};

pub fn run(path: Option<&Path>, openshift: bool, out: &mut impl Write) -> Result<ExitCode> {
    let config = load_config(path)?;
    out.write_all(yaml(&config, openshift)?.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The DaemonSets without an owner reference: what the controller applies, minus what only it knows.
pub fn yaml(config: &Config, openshift: bool) -> Result<String> {
    let options = RenderOptions { openshift, owner: None };
    render::to_yaml(&render::render(config, &options)).map_err(CommandError::Yaml)
}
