//! The sleeper every cache container runs, so that images with no shell and no `sleep` (scratch,
//! distroless) can be kept on a node.
//!
//! `kip-sleep install DEST` copies this binary to DEST (the init container does this into a shared
//! emptyDir); `kip-sleep` with no arguments waits for SIGTERM, SIGINT or SIGHUP and exits 0 at once, using
//! no CPU meanwhile. As PID 1 of a container a process gets no default signal handling, so it must wait
//! for the signal itself or the kubelet has to wait out the grace period and kill it.
//! Std and libc only; the release build is linked statically so it runs in any image.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        None => wait_for_termination(),
        Some("install") if args.len() == 3 => match install(PathBuf::from(&args[2]), args.first()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "kip-sleep: cannot install to {}: {e}",
                    PathBuf::from(&args[2]).display()
                );
                ExitCode::FAILURE
            }
        },
        Some(_) => {
            eprintln!("usage: kip-sleep            wait until SIGTERM/SIGINT/SIGHUP, then exit 0");
            eprintln!("       kip-sleep install DEST   copy this binary to DEST");
            ExitCode::from(2)
        }
    }
}

/// Copies the running binary to `dest` (through a temporary name, so a restarted init container never
/// leaves a half-written file).
fn install(dest: PathBuf, argv0: Option<&std::ffi::OsString>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // /proc may be missing (an empty chroot); the path we were started by works there.
    let source = std::env::current_exe().or_else(|e| argv0.map(PathBuf::from).ok_or(e))?;
    let tmp = dest.with_extension("tmp");
    std::fs::copy(&source, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &dest)
}

#[allow(unsafe_code)] // signal masks have no safe std API; each call is checked.
fn wait_for_termination() -> ExitCode {
    // SAFETY: `set` is a plain sigset_t initialised by sigemptyset before use; the calls only read it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            eprintln!("kip-sleep: cannot block signals");
            return ExitCode::FAILURE;
        }
        let mut received: libc::c_int = 0;
        loop {
            if libc::sigwait(&set, &mut received) == 0 {
                return ExitCode::SUCCESS;
            }
        }
    }
}
