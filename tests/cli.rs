//! The binaries as a user runs them: `kubernetes-image-puller check|render|schema|quota` and `kip-sleep`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::CommandFactory;
use k8s_openapi::api::apps::v1::DaemonSet;
use kubernetes_image_puller::cli::Cli;
use kubernetes_image_puller::config;
use kubernetes_image_puller::render::{self, RenderOptions};
use support::{MINIMAL_SET, Vars, read_repo_file, repo_path};

const PULLER: &str = env!("CARGO_BIN_EXE_kubernetes-image-puller");
const SLEEPER: &str = env!("CARGO_BIN_EXE_kip-sleep");

/// The puller with a clean environment (no CONFIG_FILE, IMAGES, ... from the test runner).
fn puller(args: &[&str]) -> Command {
    let mut cmd = Command::new(PULLER);
    cmd.env_clear().args(args);
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().expect("the binary runs");
    (
        status.code().expect("exited, not killed"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&mut puller(&["--help"]));
    assert_eq!(code, 0);
    for word in ["check", "render", "schema", "quota", "--config"] {
        assert!(out.contains(word), "--help should mention {word}:\n{out}");
    }
    let (code, out, _) = run(&mut puller(&["--version"]));
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("kubernetes-image-puller {}", env!("CARGO_PKG_VERSION"))
    );
}

// ---------------------------------------------------------------------------------------------------------------
// check

#[test]
fn check_prints_one_line_per_set() {
    let gpu = repo_path("config/gpu-pools.toml");
    let (code, out, err) = run(&mut puller(&["check", "--config", path_str(&gpu)]));
    assert_eq!(code, 0, "{out}{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(
        lines[0],
        "config ok: namespace kubernetes-image-puller, 2 sets, health check every 1h"
    );
    assert_eq!(
        lines.remove(1),
        "  moving tags of 2 set(s) checked against the registry every 15m"
    );
    assert!(
        lines[1]
            .trim_start()
            .starts_with("general: 2 images (che-theia, java), nodes: pool=general"),
        "{out}"
    );
    assert!(
        lines[2]
            .trim_start()
            .starts_with("gpu: 2 images (cuda, pytorch), nodes: nvidia.com/gpu.present=true"),
        "{out}"
    );
    assert!(lines[2].contains("memory 10Mi/50Mi"), "{out}");

    let default = repo_path("config/default.toml");
    let (code, out, _) = run(&mut puller(&["check", "--config", path_str(&default)]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("1 set,"), "{out}");
    assert!(out.contains("nodes: all nodes"), "{out}");
}

#[test]
fn check_reports_every_problem_and_fails() {
    let bad = repo_path("tests/fixtures/many-errors.toml");
    let (code, out, err) = run(&mut puller(&["check", "--config", path_str(&bad)]));
    assert_ne!(code, 0, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("9 problems"), "{all}");
    let origin = bad.display().to_string();
    for line in [3, 6, 9, 10, 13, 14, 15, 18, 19] {
        assert!(
            all.contains(&format!("{origin}:{line}:")),
            "line {line} missing:\n{all}"
        );
    }
    assert_eq!(
        all.lines().filter(|l| l.trim_start().starts_with("- ")).count(),
        9,
        "{all}"
    );
}

#[test]
fn check_reports_a_missing_file() {
    let (code, out, err) = run(&mut puller(&["check", "--config", "/nonexistent/kip.toml"]));
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("cannot read config /nonexistent/kip.toml"),
        "{out}{err}"
    );
}

#[test]
fn config_file_env_var_is_the_config_flag() {
    let gpu = repo_path("config/gpu-pools.toml");
    let (code, out, err) = run(puller(&["check"]).env("CONFIG_FILE", &gpu));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 sets"), "{out}");
}

#[test]
fn check_reads_a_configmap_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("IMAGES"), "a=busybox;b=alpine:3\n").unwrap();
    std::fs::write(dir.path().join("DAEMONSET_NAME"), "from-dir\n").unwrap();
    let (code, out, err) = run(&mut puller(&["check", "--config", path_str(dir.path())]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from-dir: 2 images (a, b)"), "{out}");

    std::fs::write(dir.path().join("NODE_SELECTOR"), "not json").unwrap();
    let (code, out, err) = run(&mut puller(&["check", "--config", path_str(dir.path())]));
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(&dir.path().join("NODE_SELECTOR").display().to_string()),
        "{out}{err}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Env-var mode: no --config

#[test]
fn env_var_mode_works_without_a_file() {
    let (code, out, err) = run(puller(&["check"])
        .env(
            "IMAGES",
            "java=quay.io/eclipse/che-java11-maven:next;theia=quay.io/eclipse/che-theia:next;",
        )
        .env("CACHING_INTERVAL_HOURS", "")
        .env("NODE_SELECTOR", "{\"pool\": \"general\"}"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("config ok: namespace kubernetes-image-puller, 1 set, health check every 1h"),
        "{out}"
    );
    assert!(
        out.contains("kubernetes-image-puller: 2 images (java, theia), nodes: pool=general"),
        "{out}"
    );
    assert!(out.contains("cpu .05/.2, memory 10Mi/20Mi"), "{out}");

    let (code, out, err) = run(puller(&["render"])
        .env("IMAGES", "a=busybox")
        .env("DAEMONSET_NAME", "envset"));
    assert_eq!(code, 0, "{err}");
    let dss: Vec<DaemonSet> = serde_saphyr::from_multiple(&out).unwrap();
    assert_eq!(dss.len(), 1);
    assert_eq!(dss[0].metadata.name.as_deref(), Some("envset"));
}

#[test]
fn env_var_mode_names_the_variables() {
    for images in [None, Some(""), Some("  ")] {
        let mut cmd = puller(&["check"]);
        if let Some(v) = images {
            cmd.env("IMAGES", v);
        }
        let (code, out, err) = run(&mut cmd);
        assert_ne!(code, 0, "IMAGES={images:?}");
        assert!(format!("{out}{err}").contains("IMAGES: is not set"), "{out}{err}");
    }
    let (code, out, err) = run(puller(&["check"])
        .env("IMAGES", "a=busybox;oops")
        .env("CACHING_INTERVAL_HOURS", "0")
        .env("TOLERATIONS", "{"));
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(all.contains("environment: 3 problems"), "{all}");
    for var in ["IMAGES:", "CACHING_INTERVAL_HOURS:", "TOLERATIONS:"] {
        assert!(all.contains(var), "{var} missing:\n{all}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// render

#[test]
fn render_prints_the_daemonsets_as_yaml() {
    let gpu = repo_path("config/gpu-pools.toml");
    let (code, out, err) = run(&mut puller(&["render", "--config", path_str(&gpu)]));
    assert_eq!(code, 0, "{err}");
    let dss: Vec<DaemonSet> = serde_saphyr::from_multiple(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let c = config::load(Some(&gpu), &Vars::none()).unwrap();
    assert_eq!(
        dss,
        render::render(&c, &RenderOptions::default()),
        "the command prints what render() gives"
    );
    assert_eq!(out, render::to_yaml(&dss).unwrap());
    assert_eq!(out, read_repo_file("tests/fixtures/golden/gpu-pools.yaml"));

    let (code, out, _) = run(&mut puller(&["render", "--openshift", "--config", path_str(&gpu)]));
    assert_eq!(code, 0);
    let dss: Vec<DaemonSet> = serde_saphyr::from_multiple(&out).unwrap();
    for ds in &dss {
        let sc = ds
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .security_context
            .as_ref()
            .unwrap();
        assert_eq!((sc.run_as_user, sc.fs_group), (None, None));
    }
    assert!(!out.contains("runAsUser"), "{out}");
}

#[test]
fn render_of_a_bad_config_fails_with_the_problems() {
    let bad = repo_path("tests/fixtures/many-errors.toml");
    let (code, out, err) = run(&mut puller(&["render", "--config", path_str(&bad)]));
    assert_ne!(code, 0);
    assert!(out.is_empty(), "no partial YAML on stdout: {out}");
    assert!(err.contains("9 problems"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// schema

#[test]
fn schema_prints_the_json_schema() {
    let (code, out, _) = run(&mut puller(&["schema"]));
    assert_eq!(code, 0);
    assert!(out.ends_with("}\n"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, config::json_schema());
    assert_eq!(
        out,
        format!("{}\n", serde_json::to_string_pretty(&config::json_schema()).unwrap())
    );
}

// ---------------------------------------------------------------------------------------------------------------
// quota

fn five_images() -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        "[[sets]]\nname = \"general\"\nmemory_limit = \"20Mi\"\nimages = { a = \"busybox\", b = \"alpine\", c = \"nginx\", d = \"redis\", e = \"postgres\" }\n",
    )
    .unwrap();
    file
}

#[test]
fn quota_multiplies_limit_images_and_nodes() {
    let file = five_images();
    let (code, out, err) = run(&mut puller(&[
        "quota",
        "--nodes",
        "20",
        "--config",
        path_str(file.path()),
    ]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let cells = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        cells(lines[0]),
        [
            "SET", "IMAGES", "NODES", "CPU", "REQUEST", "CPU", "LIMIT", "MEMORY", "REQUEST", "MEMORY", "LIMIT"
        ]
    );
    // 5 images x 20 nodes: cpu .05 -> 5, .2 -> 20; memory 10Mi -> 1000Mi, 20Mi -> 2000Mi.
    assert_eq!(cells(lines[1]), ["general", "5", "20", "5", "20", "1000Mi", "2000Mi"]);
    assert_eq!(cells(lines[2]), ["TOTAL", "5", "20", "1000Mi", "2000Mi"]);
}

#[test]
fn quota_adds_up_sets() {
    let gpu = repo_path("config/gpu-pools.toml");
    let (code, out, err) = run(&mut puller(&["quota", "--nodes", "3", "--config", path_str(&gpu)]));
    assert_eq!(code, 0, "{err}");
    let total = out.lines().last().unwrap();
    // general: 2 x 3 x 20Mi = 120Mi; gpu: 2 x 3 x 50Mi = 300Mi.
    assert!(total.starts_with("TOTAL") && total.ends_with("420Mi"), "{out}");
}

// ---------------------------------------------------------------------------------------------------------------
// Bad command lines

#[test]
fn bad_command_lines_exit_non_zero() {
    for args in [
        &["--no-such-flag"][..],
        &["no-such-command"],
        &["quota"],
        &["quota", "--nodes", "many"],
        &["quota", "--nodes", "-1"],
        &["render", "--openshift=maybe"],
        &["check", "--log-format", "xml"],
        &["check", "--http-addr", "not-an-address"],
    ] {
        let (code, out, err) = run(&mut puller(args));
        assert_ne!(code, 0, "{args:?} should fail:\n{out}{err}");
        assert!(!err.is_empty(), "{args:?}: say why on stderr");
    }
}

#[test]
fn check_ignores_controller_flags() {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), MINIMAL_SET).unwrap();
    let (code, out, err) = run(&mut puller(&[
        "check",
        "--log-format",
        "json",
        "--config",
        path_str(file.path()),
    ]));
    assert_eq!(code, 0, "{out}{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// kip-sleep

fn wait_with_timeout(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn send(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[test]
fn sleeper_install_copies_an_executable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sleep");
    let (code, out, err) = run(Command::new(SLEEPER).arg("install").arg(&dest));
    assert_eq!(code, 0, "{out}{err}");
    let meta = std::fs::metadata(&dest).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(SLEEPER).unwrap(),
        "a copy of itself"
    );
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(leftovers, std::slice::from_ref(&dest), "no temporary file left behind");

    // Installing again (a restarted init container) replaces the file.
    let (code, _, _) = run(Command::new(SLEEPER).arg("install").arg(&dest));
    assert_eq!(code, 0);

    // The copy works as the sleeper: usage errors exit 2.
    let (code, _, err) = run(Command::new(&dest).arg("bogus"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("usage"), "{err}");
}

#[test]
fn sleeper_install_reports_failure() {
    let (code, _, err) = run(Command::new(SLEEPER).args(["install", "/nonexistent-dir/sleep"]));
    assert_eq!(code, 1);
    assert!(err.contains("cannot install to /nonexistent-dir/sleep"), "{err}");
    let (code, _, _) = run(Command::new(SLEEPER).arg("install"));
    assert_eq!(code, 2, "install needs DEST");
    let (code, _, _) = run(Command::new(SLEEPER).args(["install", "a", "b"]));
    assert_eq!(code, 2);
}

/// Every entry of `dir`, sorted, as names.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `cp SRC DIR/` and `cp SRC DIR` copy into DIR/<name of SRC>, as cp does; a failed copy leaves no
/// temporary file behind (it used to leave `DIR.tmp`).
#[test]
fn sleeper_cp_into_a_directory() {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(SLEEPER, bin.join("cp")).unwrap();
    std::fs::copy(SLEEPER, bin.join("sleep")).unwrap();
    let cp = bin.join("cp");
    let src = bin.join("sleep");

    for (dest_name, trailing_slash) in [("kip", true), ("kip2", false)] {
        let dest = root.path().join(dest_name);
        std::fs::create_dir(&dest).unwrap();
        let mut arg = dest.clone().into_os_string();
        if trailing_slash {
            arg.push("/");
        }
        let (code, out, err) = run(Command::new(&cp).arg(&src).arg(&arg));
        assert_eq!(code, 0, "cp SRC {arg:?}: {out}{err}");
        assert_eq!(entries(&dest), ["sleep"], "copied as DIR/sleep");
        assert_eq!(
            std::fs::read(dest.join("sleep")).unwrap(),
            std::fs::read(SLEEPER).unwrap()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dest.join("sleep")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    // Failures, each with its message and nothing left next to the destination.
    let missing = root.path().join("missing");
    let file = root.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let before = entries(root.path());
    for (src, dest, expected) in [
        (
            src.clone(),
            format!("{}/", missing.display()),
            format!("kip-sleep: cannot install to {}/: not a directory\n", missing.display()),
        ),
        (
            src.clone(),
            format!("{}/", file.display()),
            format!("kip-sleep: cannot install to {}/: not a directory\n", file.display()),
        ),
        (
            src.clone(),
            format!("{}/sleep", missing.display()),
            format!(
                "kip-sleep: cannot install to {}/sleep: No such file or directory (os error 2)\n",
                missing.display()
            ),
        ),
        (
            root.path().join("no-such-source"),
            format!("{}/copy", root.path().display()),
            format!(
                "kip-sleep: cannot install to {}/copy: No such file or directory (os error 2)\n",
                root.path().display()
            ),
        ),
    ] {
        let (code, _, err) = run(Command::new(&cp).arg(&src).arg(&dest));
        assert_eq!(code, 1, "cp {} {dest}: {err}", src.display());
        assert_eq!(err, expected);
        assert_eq!(
            entries(root.path()),
            before,
            "cp {} {dest} left files behind",
            src.display()
        );
    }
}

#[test]
fn sleeper_exits_zero_promptly_on_sigterm_sigint_and_sighup() {
    for signal in ["TERM", "INT", "HUP"] {
        let mut child = Command::new(SLEEPER).stdin(Stdio::null()).spawn().unwrap();
        // It keeps running until told to stop.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.try_wait().unwrap().is_none(),
            "SIG{signal}: the sleeper exited on its own"
        );
        let sent = Instant::now();
        send(signal, child.id());
        let status = wait_with_timeout(&mut child, Duration::from_secs(5)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("SIG{signal}: the sleeper did not exit within 5 s");
        });
        assert_eq!(status.code(), Some(0), "SIG{signal}: {status:?}");
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "SIG{signal}: took {:?}",
            sent.elapsed()
        );
    }
}

/// The cache pods' protocol (shared with the upstream image): `/bin/cp /bin/sleep /kip/sleep` in the init
/// container, `/kip/sleep 720h` in every cache container. This image provides both names with one binary.
#[test]
fn sleeper_serves_the_cache_pod_protocol_under_both_names() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let kip = dir.path().join("kip");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&kip).unwrap();
    std::fs::copy(SLEEPER, bin.join("cp")).unwrap();
    std::fs::copy(SLEEPER, bin.join("sleep")).unwrap();

    let (code, out, err) = run(Command::new(bin.join("cp"))
        .arg(bin.join("sleep"))
        .arg(kip.join("sleep")));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read(kip.join("sleep")).unwrap(),
        std::fs::read(SLEEPER).unwrap()
    );
    let (code, _, _) = run(Command::new(bin.join("cp")).arg("only-one"));
    assert_eq!(code, 2, "cp needs SRC and DEST");

    // `720h` keeps running until SIGTERM, then exits 0 at once.
    let mut child = Command::new(kip.join("sleep"))
        .arg("720h")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "exited before its duration");
    send("TERM", child.id());
    let status = wait_with_timeout(&mut child, Duration::from_secs(5)).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));

    // A short duration ends by itself with 0 (the kubelet restarts it in place).
    let started = Instant::now();
    let mut child = Command::new(kip.join("sleep"))
        .arg("300ms")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(5)).expect("ends after its duration");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

/// A kubeconfig naming an API server that is not there: port 9 (discard) on loopback, where nothing
/// listens, so every API call fails at once.
fn unreachable_kubeconfig(dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{name: c, cluster: {server: \"http://127.0.0.1:9\"}}]\n\
         users: [{name: u, user: {token: t}}]\n\
         contexts: [{name: c, context: {cluster: c, user: u}}]\n",
    )
    .unwrap();
    path
}

/// The controller binary as a pod runs it, against an API server that does not answer: it stays up,
/// serves /healthz (alive) and /readyz (not ready: no pass could be made), logs JSON lines when asked,
/// and exits 0 promptly on SIGTERM.
#[test]
fn controller_binary_serves_probes_logs_json_and_stops_on_sigterm() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = unreachable_kubeconfig(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(PULLER)
        .args([
            "run",
            "--config",
            repo_path("config/default.toml").to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let get = |path: &str| -> Option<u16> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.split_whitespace().nth(1)?.parse().ok()
    };
    let started = Instant::now();
    while get("/healthz") != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(10), "no /healthz within 10 s");
        assert!(child.try_wait().unwrap().is_none(), "the controller exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get("/readyz"), Some(503), "ready without a successful pass");

    send("TERM", child.id());
    let status = wait_with_timeout(&mut child, Duration::from_secs(5)).expect("exits within 5 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("timestamp").is_some(),
            "{line}"
        );
    }
    assert!(stderr.contains("shutting down"), "{stderr}");
}

/// `--once` is for CI jobs: when the API cannot be reached it says so and exits non-zero.
#[test]
fn once_fails_clearly_without_an_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = unreachable_kubeconfig(dir.path());
    let (code, out, err) = run(Command::new(PULLER)
        .args([
            "run",
            "--once",
            "--config",
            repo_path("config/default.toml").to_str().unwrap(),
        ])
        .env_clear()
        .env("KUBECONFIG", &kubeconfig));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("cannot list DaemonSets"), "{err}");
}
