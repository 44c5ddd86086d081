//! Issue 10, process side: each case with the exact error it must give. Offline commands ignore the
//! run-only environment variables; `run` rejects a bad one by name; `quota` refuses to overflow; error
//! messages show the real cause once; `quota --from-cluster` tells an unreachable API server from a refusal.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kubernetes_image_puller::cli::{LogFormat, RunArgs, RunSettings};
use support::repo_path;

const PULLER: &str = env!("CARGO_BIN_EXE_kubernetes-image-puller");

fn puller(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(PULLER)
        .env_clear()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn default_config() -> String {
    repo_path("config/default.toml").display().to_string()
}

/// A run-only variable with a value `run` cannot use, the error `run` gives for it.
const BAD_RUN_VARS: &[(&str, &str, &str)] = &[
    (
        "LOG_FORMAT",
        "xml",
        "error: invalid environment variable LOG_FORMAT=\"xml\": expected text or json\n",
    ),
    (
        "HTTP_ADDR",
        "bad",
        "error: invalid environment variable HTTP_ADDR=\"bad\": expected an address with a port, e.g. 0.0.0.0:8080 or [::]:8080\n",
    ),
    (
        "HTTP_ADDR",
        "0.0.0.0",
        "error: invalid environment variable HTTP_ADDR=\"0.0.0.0\": expected an address with a port, e.g. 0.0.0.0:8080 or [::]:8080\n",
    ),
    (
        "RELOAD_DEBOUNCE_MS",
        "-5",
        "error: invalid environment variable RELOAD_DEBOUNCE_MS=\"-5\": expected a whole number of milliseconds from 0 to 10000\n",
    ),
    (
        "RELOAD_DEBOUNCE_MS",
        "15000",
        "error: invalid environment variable RELOAD_DEBOUNCE_MS=\"15000\": expected a whole number of milliseconds from 0 to 10000\n",
    ),
    (
        "RELOAD_DEBOUNCE_MS",
        "18446744073709551616",
        "error: invalid environment variable RELOAD_DEBOUNCE_MS=\"18446744073709551616\": expected a whole number of milliseconds from 0 to 10000\n",
    ),
    (
        "LEADER_ELECT",
        "maybe",
        "error: invalid environment variable LEADER_ELECT=\"maybe\": expected true, false, 1, 0 or empty\n",
    ),
    (
        "LEADER_ELECT",
        "yes",
        "error: invalid environment variable LEADER_ELECT=\"yes\": expected true, false, 1, 0 or empty\n",
    ),
];

#[test]
fn offline_commands_ignore_run_only_environment_variables() {
    let config = default_config();
    let commands: &[&[&str]] = &[
        &["check", "--config", &config],
        &["render", "--config", &config],
        &["schema"],
        &["quota", "--nodes", "3", "--config", &config],
    ];
    for (name, value, _) in BAD_RUN_VARS {
        for args in commands {
            let (code, out, err) = puller(args, &[(name, value)]);
            assert_eq!(code, 0, "{name}={value} {args:?}:\n{out}{err}");
            assert!(err.is_empty(), "{name}={value} {args:?}: {err}");
            assert!(!out.is_empty(), "{name}={value} {args:?}: no output");
        }
    }
}

#[test]
fn run_names_the_bad_environment_variable() {
    let config = default_config();
    for (name, value, expected) in BAD_RUN_VARS {
        // Checked before anything else happens: no API server, no port needed.
        for args in [&["run", "--config", &config][..], &["--config", &config]] {
            let (code, out, err) = puller(args, &[(name, value)]);
            assert_eq!(code, 1, "{name}={value} {args:?}:\n{out}{err}");
            assert_eq!(err, *expected, "{name}={value} {args:?}");
        }
    }
}

#[test]
fn flags_out_of_range_are_refused_by_the_command_line_parser() {
    let config = default_config();
    for (args, expected) in [
        (
            vec!["run", "--reload-debounce-ms", "10001", "--config", &config],
            "error: invalid value '10001' for '--reload-debounce-ms <MS>': 10001 is not in 0..=10000\n",
        ),
        (
            vec!["run", "--reload-debounce-ms", "-5", "--config", &config],
            "error: unexpected argument '-5' found\n",
        ),
        (
            vec!["run", "--log-format", "xml", "--config", &config],
            "error: invalid value 'xml' for '--log-format <LOG_FORMAT>'\n",
        ),
        (
            vec!["run", "--http-addr", "bad", "--config", &config],
            "error: invalid value 'bad' for '--http-addr <ADDR>': invalid socket address syntax\n",
        ),
    ] {
        let (code, _, err) = puller(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(
            err.lines().next().map(|l| format!("{l}\n")).as_deref(),
            Some(expected),
            "{args:?}: {err}"
        );
    }
}

fn resolve(env: &[(&str, &str)]) -> Result<RunSettings, String> {
    resolve_with(&RunArgs::default(), env)
}

fn resolve_with(args: &RunArgs, env: &[(&str, &str)]) -> Result<RunSettings, String> {
    args.resolve(|name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
        .map_err(|e| e.to_string())
}

#[test]
fn leader_elect_takes_true_false_one_zero_or_empty() {
    for (value, expected) in [
        ("true", true),
        ("TRUE", true),
        ("True", true),
        ("1", true),
        ("false", false),
        ("FALSE", false),
        ("False", false),
        ("0", false),
        ("", false),
    ] {
        assert_eq!(
            resolve(&[("LEADER_ELECT", value)]).map(|s| s.leader_elect),
            Ok(expected),
            "LEADER_ELECT={value:?}"
        );
    }
    assert_eq!(resolve(&[]).map(|s| s.leader_elect), Ok(false), "unset");
    for value in ["maybe", "yes", "no", "on", "off", "2", "-1", "t", "truee"] {
        assert_eq!(
            resolve(&[("LEADER_ELECT", value)]),
            Err(format!(
                "invalid environment variable LEADER_ELECT={value:?}: expected true, false, 1, 0 or empty"
            )),
        );
    }
}

#[test]
fn run_settings_defaults_environment_and_flags() {
    let defaults = resolve(&[]).unwrap();
    assert_eq!(
        defaults,
        RunSettings {
            http_addr: "0.0.0.0:8080".parse().unwrap(),
            log_format: LogFormat::Text,
            leader_elect: false,
            once: false,
            reload_debounce: Duration::from_millis(200),
        }
    );
    let from_env = resolve(&[
        ("HTTP_ADDR", "[::]:9090"),
        ("LOG_FORMAT", "JSON"),
        ("RELOAD_DEBOUNCE_MS", "10000"),
    ])
    .unwrap();
    assert_eq!(from_env.http_addr, "[::]:9090".parse().unwrap());
    assert_eq!(from_env.log_format, LogFormat::Json);
    assert_eq!(from_env.reload_debounce, Duration::from_secs(10));
    // Empty counts as unset, as in a manifest with `value: ""`.
    assert_eq!(
        resolve(&[("HTTP_ADDR", ""), ("LOG_FORMAT", ""), ("RELOAD_DEBOUNCE_MS", "")]),
        Ok(defaults)
    );
    // A flag wins over its variable, which then is not even looked at.
    let flags = RunArgs {
        http_addr: Some("127.0.0.1:1".parse().unwrap()),
        log_format: Some(LogFormat::Json),
        leader_elect: true,
        once: true,
        reload_debounce_ms: Some(0),
    };
    let s = resolve_with(
        &flags,
        &[
            ("HTTP_ADDR", "bad"),
            ("LOG_FORMAT", "xml"),
            ("RELOAD_DEBOUNCE_MS", "-5"),
            ("LEADER_ELECT", "false"),
        ],
    )
    .unwrap();
    assert_eq!(s.http_addr, "127.0.0.1:1".parse().unwrap());
    assert_eq!(s.log_format, LogFormat::Json);
    assert!(s.leader_elect && s.once);
    assert_eq!(s.reload_debounce, Duration::ZERO);
}

// ---------------------------------------------------------------------------------------------------------------
// quota --nodes: checked arithmetic

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn quota_overflow_is_an_error_naming_what_overflowed() {
    let dir = tempfile::tempdir().unwrap();
    let default = default_config();
    let two_sets = write_config(
        dir.path(),
        "[defaults]\nmemory_request = \"10Mi\"\nmemory_limit = \"10Mi\"\n\
         [[sets]]\nname = \"a\"\nimages = { x = \"busybox\" }\n\
         [[sets]]\nname = \"b\"\nimages = { y = \"alpine\" }\n",
    );
    let two_sets = two_sets.to_str().unwrap();
    for (args, expected) in [
        (
            // 10Mi x 3 x 2^64-1 in nano-units is past what i128 can hold with room to print.
            vec!["quota", "--nodes", "18446744073709551615", "--config", &default],
            "error: set kubernetes-image-puller: memory request x 3 image(s) x 18446744073709551615 node(s) is too large to compute\n",
        ),
        (
            // Each set fits (1.05e35 nano-units), their sum does not.
            vec!["quota", "--nodes", "10000000000000000000", "--config", two_sets],
            "error: the total memory request of all sets is too large to compute\n",
        ),
    ] {
        let (code, out, err) = puller(&args, &[]);
        assert_eq!(code, 1, "{args:?}:\n{out}{err}");
        assert_eq!(err, expected, "{args:?}");
        assert!(out.is_empty(), "no table with wrong totals: {out}");
    }
    for args in [
        vec!["quota", "--nodes", "18446744073709551616", "--config", &default],
        vec!["quota", "--nodes", "99999999999999999999999", "--config", &default],
    ] {
        let (code, _, err) = puller(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("number too large to fit in target type"), "{err}");
    }
    // Large but computable: exact, not saturated. 3 images x 10^12 nodes x 20Mi = 6 x 10^13 Mi.
    let (code, out, err) = puller(&["quota", "--nodes", "1000000000000", "--config", &default], &[]);
    assert_eq!(code, 0, "{err}");
    let total: Vec<&str> = out.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(
        total,
        [
            "TOTAL",
            "150000000000",
            "600000000000",
            "30000000000000Mi",
            "60000000000000Mi"
        ]
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Error messages: the real cause, once

const CLIENT_SETUP: &str =
    "error: cannot set up the Kubernetes client (no in-cluster config and no usable kubeconfig): ";

#[test]
fn a_bad_kubeconfig_shows_the_real_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "garbage: [\n").unwrap();
    let no_context = dir.path().join("no-context");
    std::fs::write(&no_context, "apiVersion: v1\nkind: Config\nclusters: []\n").unwrap();
    let missing = dir.path().join("missing");
    let config = default_config();
    for (kubeconfig, cause) in [
        (&garbage, "failed to parse kubeconfig YAML: "),
        (&no_context, "failed to determine current context"),
        (&missing, "No such file or directory (os error 2)"),
    ] {
        for args in [
            vec!["quota", "--from-cluster", "--config", &config],
            vec!["status", "--config", &config],
            vec!["run", "--once", "--config", &config],
        ] {
            let (code, _, err) = puller(&args, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
            assert_eq!(code, 1, "{args:?} {}: {err}", kubeconfig.display());
            assert!(err.starts_with(CLIENT_SETUP), "{args:?}: {err}");
            assert_eq!(err.matches(cause).count(), 1, "{args:?}: the cause once: {err}");
        }
    }
}

#[test]
fn a_taken_port_is_reported_once() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = support::kubeconfig(dir.path(), "http://127.0.0.1:9");
    let (code, _, err) = puller(
        &["run", "--http-addr", &addr.to_string(), "--config", &default_config()],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.lines().last().unwrap(),
        format!("error: cannot listen on {addr}: Address already in use (os error 98)")
    );
}

/// An API server answering every request with one status and a Kubernetes `Status` body.
fn api_answering(code: u16, reason: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = format!(
        "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\
         \"message\":\"nodes is {reason}\",\"reason\":\"{reason}\",\"code\":{code}}}"
    );
    let reason = reason.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
                head.push(byte[0]);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn quota_from_cluster_blames_permissions_only_when_refused() {
    let config = default_config();
    for (server, expected) in [
        (
            "http://127.0.0.1:9".to_owned(),
            "error: cannot count nodes: cannot reach the API server: ",
        ),
        (
            api_answering(403, "Forbidden"),
            "error: cannot count nodes: not allowed to list nodes (the quota command needs `list nodes`): ",
        ),
        (
            api_answering(401, "Unauthorized"),
            "error: cannot count nodes: the API server did not accept the credentials: ",
        ),
        (
            api_answering(500, "InternalError"),
            "error: cannot count nodes: the API server refused the request: ",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = support::kubeconfig(dir.path(), &server);
        let (code, out, err) = puller(
            &["quota", "--from-cluster", "--config", &config],
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        );
        assert_eq!(code, 1, "{server}:\n{out}{err}");
        assert!(err.starts_with(expected), "{server}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        if !server.ends_with(":9") {
            assert!(!err.contains("reach"), "{err}");
        }
    }
}
