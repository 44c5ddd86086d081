//! SIGTERM ends the controller binary within a second in every state it can be waiting in: idle, a reload
//! debounce, startup discovery, an Event post or Lease setup against an API server that accepts
//! connections and never answers. Real signals, real binary, real sockets on 127.0.0.1.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PULLER: &str = env!("CARGO_BIN_EXE_kubernetes-image-puller");
/// The correctness bound of the issue: shutdown under a second in every state.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(1);

const CONFIG: &str = "namespace = \"kip-shutdown\"\n[[sets]]\nname = \"s\"\nimages = { a = \"busybox\" }\n";

/// An API server that accepts every connection, reads the request head, records its first line, and never
/// answers (the sockets stay open until the test process ends).
fn hung_api() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let record = record.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_ok() && !line.is_empty() {
                    record.lock().unwrap().push(line.trim_end().to_owned());
                }
                // Hold the connection, reading whatever comes, without ever answering.
                let mut sink = [0u8; 1024];
                while matches!(reader.get_mut().read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    port: u16,
}

fn start(args: &[&str], env: &[(&str, &str)], kubeconfig: &Path, config: &Path) -> Running {
    let port = free_port();
    let mut child = Command::new(PULLER)
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    Running { child, stderr, port }
}

impl Running {
    fn healthz(&self) -> bool {
        use std::io::Write;
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = write!(s, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut response = String::new();
        let _ = s.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 200")
    }

    fn wait_for(&mut self, what: &str, within: Duration, mut cond: impl FnMut(&Self) -> bool) {
        let started = Instant::now();
        while !cond(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "exited ({status:?}) while waiting for {what}:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                panic!("no {what} within {within:?}:\n{}", self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and returns how long the process took to exit (it must exit 0).
    fn terminate(mut self) -> (Duration, String) {
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            if sent.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("still running 20 s after SIGTERM:\n{}", self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = sent.elapsed();
        std::thread::sleep(Duration::from_millis(50)); // the stderr reader's last lines
        let stderr = self.stderr.lock().unwrap().clone();
        assert_eq!(exit.code(), Some(0), "{exit:?}\n{stderr}");
        (took, stderr)
    }
}

fn seen_request(seen: &Arc<Mutex<Vec<String>>>, part: &str) -> bool {
    seen.lock().unwrap().iter().any(|l| l.contains(part))
}

#[test]
fn sigterm_ends_the_controller_within_a_second_in_every_state() {
    let refused_api = "http://127.0.0.1:9"; // nothing listens: every call fails at once
    let mut figures = Vec::new();

    // Each case: a name, the API server, extra args and env, and what to wait for before SIGTERM. States
    // with nothing pending at the API end the loop itself at once; a call pending against a hung API server
    // is abandoned after the process's grace period (the log says so).
    type Ready = Box<dyn Fn(&mut Running, &Path)>;
    type Case<'a> = (&'a str, &'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, Ready);
    let (hung, seen) = hung_api();
    let cases: Vec<Case> = vec![
        (
            "idle, API server refusing connections",
            refused_api,
            vec![],
            vec![],
            Box::new(|r: &mut Running, _: &Path| {
                r.wait_for("config loaded", Duration::from_secs(10), |r| {
                    r.stderr.lock().unwrap().contains("config loaded")
                })
            }),
        ),
        (
            "reload debounce of 10 s pending",
            refused_api,
            vec!["--reload-debounce-ms", "10000"],
            vec![],
            Box::new(|r: &mut Running, config: &Path| {
                r.wait_for("config loaded", Duration::from_secs(10), |r| {
                    r.stderr.lock().unwrap().contains("config loaded")
                });
                std::fs::write(config, CONFIG.replace("busybox", "alpine")).unwrap();
                std::thread::sleep(Duration::from_millis(500)); // the change is seen, the debounce runs
            }),
        ),
        (
            "startup discovery against a hung API server",
            &hung,
            vec![],
            vec![],
            Box::new({
                let seen = seen.clone();
                move |r: &mut Running, _: &Path| {
                    r.wait_for("GET /apis at the hung API", Duration::from_secs(10), |_| {
                        seen_request(&seen, "GET /apis")
                    })
                }
            }),
        ),
        (
            "Event post pending against a hung API server",
            &hung,
            vec![],
            vec![("POD_NAME", "kip-shutdown-0"), ("POD_NAMESPACE", "kip-shutdown")],
            Box::new({
                let seen = seen.clone();
                move |r: &mut Running, _: &Path| {
                    r.wait_for("an Event post at the hung API", Duration::from_secs(25), |_| {
                        seen_request(&seen, "/events")
                    })
                }
            }),
        ),
        (
            "leader election setup against a hung API server",
            &hung,
            vec![],
            vec![("LEADER_ELECT", "true")],
            Box::new({
                let seen = seen.clone();
                move |r: &mut Running, _: &Path| {
                    r.wait_for("a Lease request at the hung API", Duration::from_secs(15), |_| {
                        seen_request(&seen, "/leases")
                    })
                }
            }),
        ),
    ];

    for (name, api, args, env, ready) in cases {
        seen.lock().unwrap().clear();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let kubeconfig = support::kubeconfig(dir.path(), api);
        let mut running = start(&args, &env, &kubeconfig, &config);
        running.wait_for("/healthz", Duration::from_secs(10), Running::healthz);
        ready(&mut running, &config);
        let (took, stderr) = running.terminate();
        assert!(stderr.contains("shutting down"), "{name}:\n{stderr}");
        assert!(took < SHUTDOWN_BOUND, "{name}: SIGTERM took {took:?}\n{stderr}");
        // Nothing pending at a refusing API: the loop ends by itself. Against a hung API the call may be
        // abandoned after the grace period, or (leader election, which runs in its own task) not block at all.
        let abandoned = stderr.contains("still pending at shutdown");
        assert!(
            !abandoned || api == hung,
            "{name}: the loop should end by itself unless an API call hangs:\n{stderr}"
        );
        figures.push(format!("{name}: {took:?}"));
    }
    eprintln!("shutdown latencies:\n  {}", figures.join("\n  "));
}
