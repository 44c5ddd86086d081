//! kubernetes-image-puller: keeps container images cached on Kubernetes nodes, one DaemonSet per image set.
//!
//! Data flows one way: file → parse → validate ([`config`]) → desired DaemonSets ([`render`], pure) →
//! apply/prune against the API → status.

pub mod cli;
pub mod commands;
pub mod config;
pub mod controller;
pub mod freshness;
pub mod health;
pub mod http;
pub mod k8s;
pub mod labels;
pub mod metrics;
pub mod quota;
pub mod rbac;
pub mod reconcile;
pub mod registry;
pub mod render;
pub mod scheduling;
pub mod status;
pub mod telemetry;
pub mod warmth;
pub mod watch;
pub mod webhook;

/// glibc's malloc, set to give memory back: blocks of 64 KiB and more (list pages, request bodies) get
/// their own mapping, returned to the system when freed, instead of the default threshold that rises
/// after each such free until large blocks stay in a heap that is seldom trimmed; and one arena for all
/// threads instead of one per thread. Measured with benches/process.rs: the RSS stays flat from 3 to
/// 1,000 nodes (mimalloc 0.1.52, tried as the global allocator, held 2-5 MiB more; in a musl build,
/// 11-27 MiB more). The cost: a large config's transient parse buffers are mapped and faulted in again on
/// every load (about 1,200 page faults a webhook answer for 100 sets x 100 images, about a tenth of its time).
#[allow(unsafe_code)] // mallopt is a C function; see SAFETY.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; call it before any other thread exists
    // (the binary does so first thing in main; benches/render.rs too, so that it measures what runs). A
    // refused value (0 returned) leaves the default, which is still correct, only larger.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // Other libcs keep their defaults (musl's malloc already unmaps freed large blocks).
}
