//! Log lines captured for tests that count them, and the lock that runs such tests one at a time.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Tests that count log lines run one at a time (each test of such a file takes it): tracing's per-callsite
/// interest is global, so a callsite first hit by a test without a subscriber while another registers or
/// drops its scoped one can be missed by the counts.
pub static LOGGING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Log lines, captured from every task on this (current-thread) runtime.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}
