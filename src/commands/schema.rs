//! `schema`: prints the JSON Schema of the config file.

use std::io::Write;
use std::process::ExitCode;

use super::Result;

pub fn run(out: &mut impl Write) -> Result<ExitCode> {
    let schema = serde_json::to_string_pretty(&crate::config::json_schema())?;
    writeln!(out, "{schema}")?;
    Ok(ExitCode::SUCCESS)
}
