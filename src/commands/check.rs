//! `check`: validates the config and prints one line per set, or every problem found.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::{Result, load_config};
use crate::config::ImageSet;

/// One line per set and exit 0, or `error: ...` with all problems and exit 1.
pub fn run(path: Option<&Path>, out: &mut impl Write) -> Result<ExitCode> {
    match load_config(path) {
        Ok(config) => {
            writeln!(
                out,
                "config ok: namespace {}, {} set{}, health check every {}h",
                config.namespace,
                config.sets.len(),
                if config.sets.len() == 1 { "" } else { "s" },
                config.caching_interval_hours
            )?;
            let digest_sets = config
                .sets
                .iter()
                .filter(|s| s.refresh == crate::config::Refresh::Digest && s.images.iter().any(|i| !i.is_pinned()))
                .count();
            if digest_sets > 0 {
                writeln!(
                    out,
                    "  moving tags of {digest_sets} set(s) checked against the registry every {}",
                    jiff::SignedDuration::try_from(config.refresh_check_interval)
                        .map_or_else(|_| format!("{:?}", config.refresh_check_interval), |d| format!("{d:#}"))
                )?;
            }
            for set in &config.sets {
                writeln!(out, "{}", set_summary(set))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            writeln!(out, "error: {e}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A set in one line: its images, where it runs and each container's resources.
pub fn set_summary(set: &ImageSet) -> String {
    let selector = if set.node_selector.is_empty() {
        "all nodes".to_owned()
    } else {
        set.node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let names: Vec<&str> = set.images.iter().map(|i| i.name.as_str()).collect();
    format!(
        "  {}: {} image{} ({}), nodes: {}, per container: cpu {}/{}, memory {}/{}",
        set.name,
        set.images.len(),
        if set.images.len() == 1 { "" } else { "s" },
        names.join(", "),
        selector,
        set.resources.cpu_request,
        set.resources.cpu_limit,
        set.resources.memory_request,
        set.resources.memory_limit,
    )
}
