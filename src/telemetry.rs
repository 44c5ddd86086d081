//! Logging: tracing with an env filter (RUST_LOG, default info), as text or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Info for this program, warnings for the libraries. Directives match target prefixes as strings, so
/// `kube=warn` would also silence `kubernetes_image_puller`: name the kube crates in full.
pub const DEFAULT_FILTER: &str =
    "info,kube_client=warn,kube_runtime=warn,kube_lease_manager=warn,tower=warn,hyper=warn";

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
