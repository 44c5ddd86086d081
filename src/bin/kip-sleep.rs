//! The sleeper every cache container runs, so that images with no shell and no `sleep` (scratch,
//! distroless) can be kept on a node.
//!
//! The cache pods use the same protocol as the upstream tool, so either image can provide the sleeper: an
//! init container runs `/bin/cp /bin/sleep /kip/sleep` from the sleeper image into a shared emptyDir, and
//! every cache container runs `/kip/sleep 720h`. The upstream image has a real `cp` and a Go `sleep`; this
//! project's image (no shell, nothing else) has this one binary installed as `/bin/sleep` and `/bin/cp`,
//! and it acts by the name it is called by:
//!
//! - as `cp SRC DEST`: copies SRC to DEST, or into DEST when it is a directory (executable, through a
//!   temporary name);
//! - as `kip-sleep install DEST`: copies itself to DEST;
//! - otherwise (`sleep [DURATION]`): waits for SIGTERM, SIGINT or SIGHUP and exits 0 at once, or exits 0
//!   when DURATION (Go style `720h`, `1h30m`, `90s`, or plain seconds) has passed; no DURATION waits
//!   forever. No CPU is used meanwhile. As PID 1 of a container a process gets no default signal
//!   handling, so it must wait for the signal itself or the kubelet has to wait out the grace period.
//!
//! Std and libc only; the release build is linked statically so it runs in any image.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: kip-sleep [DURATION]      wait for SIGTERM/SIGINT/SIGHUP (or DURATION, e.g. 720h), exit 0
       kip-sleep install DEST   copy this binary to DEST
       cp SRC DEST              (called as cp) copy SRC to DEST";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let called_as = args
        .first()
        .map(Path::new)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let rest: Vec<&str> = args.iter().skip(1).map(|a| a.to_str().unwrap_or("\u{fffd}")).collect();
    match (called_as, rest.as_slice()) {
        ("cp", [src, dest]) => copy_or_report(Path::new(src), Path::new(dest)),
        ("cp", _) => usage(),
        (_, ["install", dest]) => {
            // /proc may be missing (an empty chroot); the path we were started by works there.
            let source = std::env::current_exe().ok().or_else(|| args.first().map(PathBuf::from));
            match source {
                Some(source) => copy_or_report(&source, Path::new(dest)),
                None => usage(),
            }
        }
        (_, ["install", ..]) => usage(),
        (_, []) => wait_for_termination(None),
        (_, [duration]) => match parse_duration(duration) {
            Some(d) => wait_for_termination(Some(d)),
            None => {
                eprintln!("kip-sleep: invalid duration {duration:?}: use e.g. 720h, 1h30m, 90s or 600");
                usage()
            }
        },
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn copy_or_report(source: &Path, dest: &Path) -> ExitCode {
    let target = match target_path(source, dest) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kip-sleep: cannot install to {}: {e}", dest.display());
            return ExitCode::FAILURE;
        }
    };
    match copy_executable(source, &target) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kip-sleep: cannot install to {}: {e}", target.display());
            ExitCode::FAILURE
        }
    }
}

/// Where a copy goes, as `cp` decides it: into DEST/<name of SRC> when DEST is a directory (or is written
/// with a trailing slash, which must then be a directory), else DEST itself.
fn target_path(source: &Path, dest: &Path) -> std::io::Result<PathBuf> {
    let slash = dest.as_os_str().as_encoded_bytes().ends_with(b"/");
    if dest.is_dir() {
        let name = source.file_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("source {} has no file name", source.display()),
            )
        })?;
        return Ok(dest.join(name));
    }
    if slash {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    Ok(dest.to_path_buf())
}

/// Copies through a temporary name next to DEST, so a restarted init container never leaves a half-written
/// file; the temporary file is removed again if any step fails.
fn copy_executable(source: &Path, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut tmp_name = dest.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".kip-tmp");
    let tmp = dest.with_file_name(tmp_name);
    let result = std::fs::copy(source, &tmp)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&tmp, dest));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Go's `time.ParseDuration` units (what upstream's sleeper takes: `720h`, `1h30m`, `1.5h`, `300ms`), plus
/// a plain number of seconds and a `d` suffix, as coreutils `sleep` takes them.
fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::try_from_secs_f64(secs).ok())
            .flatten();
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[allow(unsafe_code)] // signal masks have no safe std API; each call is checked.
fn wait_for_termination(limit: Option<Duration>) -> ExitCode {
    // SAFETY: `set` is a plain sigset_t initialised by sigemptyset before use; the calls only read it, and
    // `timeout` is a valid timespec for the duration of the call.
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
        let deadline = limit.map(|d| std::time::Instant::now() + d);
        loop {
            let got = match deadline {
                None => {
                    let mut received: libc::c_int = 0;
                    if libc::sigwait(&set, &mut received) == 0 { 1 } else { -1 }
                }
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return ExitCode::SUCCESS;
                    }
                    // Waits of up to a day at a time keep the timespec in range on any platform.
                    let step = left.min(Duration::from_secs(86_400));
                    let timeout = libc::timespec {
                        // `as _`: the field's own type (libc deprecates naming `time_t` on musl).
                        tv_sec: step.as_secs() as _,
                        tv_nsec: step.subsec_nanos() as libc::c_long,
                    };
                    libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout)
                }
            };
            if got > 0 {
                return ExitCode::SUCCESS;
            }
            // Timed out (EAGAIN) or interrupted (EINTR): check the deadline and wait again.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(s);
        assert_eq!(d("720h"), Some(Duration::from_secs(720 * 3600)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(d("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(d("90"), Some(Duration::from_secs(90)));
        assert_eq!(d("2d"), Some(Duration::from_secs(172_800)));
        for bad in ["", "h", "10x", "-5", "1h-2m", "abc", "inf", "NaN"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    /// A rename that fails after the copy (DEST is a non-empty directory here) removes the temporary file.
    #[test]
    fn failed_copy_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("kip-sleep-test-{}", std::process::id()));
        let dest = dir.join("dest");
        std::fs::create_dir_all(dest.join("occupied")).unwrap();
        let source = dir.join("source");
        std::fs::write(&source, "x").unwrap();
        assert!(copy_executable(&source, &dest).is_err());
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(left, ["dest", "source"]);
    }
}
