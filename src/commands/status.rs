//! `status`: each set's health, quota shortfalls and permissions against the current kube context.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{Result, client};
use crate::cli::OutputFormat;
use crate::config::Env;
use crate::controller::{self, StatusReport};

/// Reads the cluster (writes nothing), prints the report; exit 1 if anything fails.
pub async fn run(config_path: Option<PathBuf>, output: OutputFormat, out: &mut impl Write) -> Result<ExitCode> {
    let report = controller::status(client().await?, config_path.as_deref(), &Env).await?;
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
                ToString::to_string,
            );
            let _ = writeln!(
                out,
                "not created: set {} lacks a pod on {} of {} node(s): {why}",
                h.set, h.nodes_without_pod, h.desired
            );
        }
        for f in h.failing.iter().filter(|f| !f.image.is_empty()) {
            let _ = writeln!(out, "failing: set {} image {f}", h.set);
        }
    }
    for f in &report.freshness {
        if !matches!(f.freshness, crate::freshness::Freshness::Pinned) {
            let _ = writeln!(out, "digest: {f}");
        }
    }
    for s in &report.shortfalls {
        let _ = writeln!(out, "quota: {s}");
    }
    for t in &report.quota_totals {
        let _ = writeln!(out, "quota: {t}");
    }
    if let Some(w) = &report.warm {
        let _ = writeln!(out, "{w}");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{FailingImage, NotCreated, SetHealth};

    #[test]
    fn table_words_failing_images_and_refused_pods_as_the_health_summary_does() {
        let failing = FailingImage {
            image: "quay.io/x/missing:1".into(),
            container: "c0".into(),
            reason: "ErrImagePull".into(),
            message: "unauthorized".into(),
            node_count: 1,
            nodes: vec!["n1".into()],
        };
        let mut h = SetHealth {
            set: "wide".into(),
            present: true,
            up_to_date: true,
            desired: 3,
            scheduled: 2,
            ready: 1,
            updated: 3,
            failing: vec![failing.clone()],
            nodes_without_pod: 1,
            not_created: None,
        };
        h.set_not_created(Some(NotCreated {
            reason: "FailedCreate".into(),
            cause: "pod_security".into(),
            message: "violates PodSecurity".into(),
            count: 2,
        }));
        let report = StatusReport {
            namespace: "ns".into(),
            sets: vec![h],
            shortfalls: Vec::new(),
            permissions: crate::rbac::Access::default().report(),
            quota_totals: Vec::new(),
            config: None,
            warm: None,
            freshness: vec![crate::freshness::ImageFreshness {
                set: "wide".into(),
                image: "ide".into(),
                reference: "reg/ide:next".into(),
                freshness: crate::freshness::Freshness::RegistryFailed {
                    reason: "unreachable".into(),
                    message: "cannot resolve reg/ide:next at reg: unreachable: connection refused".into(),
                    cached_nodes: 3,
                },
            }],
        };
        let text = table(&report);
        assert!(
            text.contains("digest: set wide image ide (reg/ide:next): cached on 3 node(s); registry unreachable: "),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.contains(&"not created: set wide lacks a pod on 1 of 3 node(s): FailedCreate (pod_security): violates PodSecurity"),
            "{text}"
        );
        assert!(
            lines.contains(&format!("failing: set wide image {failing}").as_str()),
            "{text}"
        );
        assert!(
            lines.contains(
                &"failing: set wide image quay.io/x/missing:1 (c0): ErrImagePull on 1 node(s): n1: unauthorized"
            ),
            "{text}"
        );
        // The refused-pod entry counts in FAILING but has no `failing:` line of its own.
        assert_eq!(lines.iter().filter(|l| l.starts_with("failing:")).count(), 1, "{text}");
    }
}
