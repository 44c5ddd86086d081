//! `status`: each set's health, quota shortfalls and permissions against the current kube context.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{Result, client};
use crate::cli::OutputFormat;
use crate::config::Env;
use crate::controller::{Controller, Settings, StatusReport};
use crate::metrics::Metrics;

/// Reads the cluster (writes nothing), prints the report; exit 1 if anything fails.
pub async fn run(config_path: Option<PathBuf>, output: OutputFormat, out: &mut impl Write) -> Result<ExitCode> {
    let settings = Settings::from_env(config_path, Duration::from_millis(200), false);
    let mut controller = Controller::new(
        client().await?,
        settings,
        Box::new(Env),
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    let report = controller.status().await?;
    let text = match output {
        OutputFormat::Table => table(&report),
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
    };
    out.write_all(text.as_bytes())?;
    Ok(if report.is_healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The `status` table.
pub fn table(report: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<8} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "SET", "PRESENT", "UP-TO-DATE", "DESIRED", "READY", "UPDATED", "NO-POD", "FAILING"
    );
    for h in &report.sets {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8}",
            h.set,
            yes(h.present),
            yes(h.up_to_date),
            h.desired,
            h.ready,
            h.updated,
            h.nodes_without_pod,
            h.failing.len()
        );
    }
    for h in &report.sets {
        if h.nodes_without_pod > 0 {
            let why = h.not_created.as_ref().map_or_else(
                || "no FailedCreate Event (yet): pods pending, or Events not readable".to_owned(),
                |n| format!("{} ({}): {}", n.reason, n.cause, n.message),
            );
            let _ = writeln!(
                out,
                "not created: set {} lacks a pod on {} of {} node(s): {why}",
                h.set, h.nodes_without_pod, h.desired
            );
        }
        for f in h.failing.iter().filter(|f| !f.image.is_empty()) {
            let more = f.node_count.saturating_sub(f.nodes.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "failing: set {} image {} ({}): {} on {} node(s): {}{}: {}",
                h.set,
                f.image,
                f.container,
                f.reason,
                f.node_count,
                f.nodes.join(", "),
                more,
                f.message
            );
        }
    }
    for s in &report.shortfalls {
        let _ = writeln!(out, "quota: {s}");
    }
    for t in &report.quota_totals {
        let _ = writeln!(out, "quota: {t}");
    }
    if let Some(v) = &report.config {
        let _ = writeln!(out, "config: {} version {}", v.source, v.version);
    }
    let p = &report.permissions;
    let unknown = if p.reviewed {
        ""
    } else {
        " (permissions unknown: the SelfSubjectRulesReview was not answered)"
    };
    let _ = writeln!(out, "write strategy: {}{unknown}", p.write_strategy);
    if let Some(need) = p.rolling_updates_need {
        let _ = writeln!(out, "rolling updates need: {need}");
    }
    for m in &p.missing {
        let _ = writeln!(out, "permission: {m}");
    }
    out
}
