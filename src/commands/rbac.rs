//! `rbac`: prints the permission table as a Role and a ClusterRole, as YAML or JSON.

use std::io::Write;
use std::process::ExitCode;

use super::Result;
use crate::cli::RbacFormat;

pub fn run(format: RbacFormat, name: &str, out: &mut impl Write) -> Result<ExitCode> {
    out.write_all(text(format, name)?.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn text(format: RbacFormat, name: &str) -> Result<String> {
    Ok(match format {
        RbacFormat::Yaml => crate::rbac::manifests_yaml(name),
        RbacFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&crate::rbac::manifests_json(name))?
        ),
    })
}
