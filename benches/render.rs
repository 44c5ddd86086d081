//! Config core at scale: 100 sets x 100 images (10 000 containers).
//!
//! Times, per pass: `load_toml_str` (parse + validate + merge), the desired form a pass compares with
//! (every set's name and spec hash), and both together (what a reload costs before its writes), against a
//! target of 20 ms; then a reload where one set changed, planned against the 100 live objects (one object
//! built). For information: building every k8s-openapi object (the first pass after a start compares all
//! of them; the `render` command prints them) and the YAML of `render`. Prints median and min; a miss is
//! reported, never a failure (timings depend on the machine). Also the admission webhook's answer for a
//! ConfigMap holding that config (target 10 ms). malloc is tuned as the binary tunes it. Run with
//! `cargo bench --bench render`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubernetes_image_puller::config::{self, VarSource};
use kubernetes_image_puller::rbac::WriteStrategy;
use kubernetes_image_puller::reconcile::{self, Action, Verified};
use kubernetes_image_puller::render::{self, RenderOptions};

const SETS: usize = 100;
const IMAGES_PER_SET: usize = 100;
const WARMUP: usize = 3;
const ITERATIONS: usize = 25;
const TARGET: Duration = Duration::from_millis(20);

struct NoVars;

impl VarSource for NoVars {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
    fn label(&self, name: &str) -> String {
        name.to_owned()
    }
}

/// A config using most fields: defaults, per-set selectors, tolerations, resources, tags and digests.
fn config_text() -> String {
    let mut t = String::from(
        "namespace = \"image-cache\"\ncaching_interval_hours = 6\n\n[defaults]\nmemory_request = \"10Mi\"\nmemory_limit = \"20Mi\"\ncpu_request = \"50m\"\ncpu_limit = \"200m\"\nimage_pull_secrets = [\"regcred\"]\nannotations = { \"example.com/team\" = \"platform\" }\n",
    );
    for s in 0..SETS {
        let _ = write!(
            t,
            "\n[[sets]]\nname = \"set-{s:03}\"\nnode_selector = {{ \"pool\" = \"pool-{}\" }}\n",
            s % 7
        );
        if s % 3 == 0 {
            t.push_str("tolerations = [{ key = \"dedicated\", operator = \"Equal\", value = \"cache\", effect = \"NoSchedule\" }]\n");
        }
        if s % 5 == 0 {
            t.push_str("memory_limit = \"64Mi\"\n");
        }
        let _ = writeln!(t, "[sets.images]");
        for i in 0..IMAGES_PER_SET {
            if i % 4 == 0 {
                let _ = writeln!(
                    t,
                    "image-{i:03} = \"registry.example.com/team-{s}/image-{i}@sha256:{:064x}\"",
                    s * 1000 + i
                );
            } else {
                let _ = writeln!(
                    t,
                    "image-{i:03} = \"registry.example.com/team-{s}/image-{i}:v{}.{}\"",
                    i % 10,
                    s % 10
                );
            }
        }
    }
    t
}

struct Stats {
    median: Duration,
    min: Duration,
}

fn measure(mut f: impl FnMut()) -> Stats {
    for _ in 0..WARMUP {
        f();
    }
    let mut times: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    Stats {
        median: times[times.len() / 2],
        min: times[0],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(what: &str, stats: &Stats, targeted: bool) {
    let verdict = match (targeted, stats.median < TARGET) {
        (false, _) => "(info, no target)".to_owned(),
        (true, true) => format!("PASS (median < {} ms)", TARGET.as_millis()),
        (true, false) => format!("MISS (median >= {} ms)", TARGET.as_millis()),
    };
    println!(
        "{what:<36} median {:>8.3} ms   min {:>8.3} ms   {verdict}",
        ms(stats.median),
        ms(stats.min)
    );
}

fn main() {
    // The allocator as the binary sets it: large blocks mapped and returned to the system when freed.
    kubernetes_image_puller::tune_allocator();
    // `cargo bench` passes `--bench`; `cargo test --benches` (an unoptimized build) does not: only check there.
    let quick = !std::env::args().any(|a| a == "--bench");
    let text = config_text();
    let config = config::load_toml_str(&text, "bench.toml", &NoVars)
        .unwrap_or_else(|e| panic!("the bench config must be valid: {e}"));
    assert_eq!(config.sets.len(), SETS);
    assert!(config.sets.iter().all(|s| s.images.len() == IMAGES_PER_SET));
    let options = RenderOptions::default();
    if quick {
        assert_eq!(render::render(&config, &options).len(), SETS);
        println!("bench render: config of {SETS} sets x {IMAGES_PER_SET} images loads and renders (quick mode)");
        return;
    }

    println!(
        "config core: {SETS} sets x {IMAGES_PER_SET} images ({} containers), {} KiB of TOML; {ITERATIONS} passes after {WARMUP} warm-up",
        SETS * IMAGES_PER_SET,
        text.len() / 1024
    );
    println!("target: < {} ms per pass", TARGET.as_millis());

    let load = measure(|| {
        black_box(config::load_toml_str(black_box(&text), "bench.toml", &NoVars).unwrap());
    });
    report("load_toml_str (parse + validate)", &load, true);

    let config = Arc::new(config);
    let hashes = measure(|| {
        let desired = render::desired(black_box(&config), &options);
        assert_eq!(desired.len(), SETS);
        black_box(desired);
    });
    report("desired form (names + spec hashes)", &hashes, true);

    let reload = measure(|| {
        let c = Arc::new(config::load_toml_str(black_box(&text), "bench.toml", &NoVars).unwrap());
        black_box(render::desired(&c, &options));
    });
    report("reload (load + desired form)", &reload, true);

    // The live objects as the first pass left them (verified), then an edit of one image of one set.
    let live: Vec<_> = render::render(&config, &options).into_iter().map(Arc::new).collect();
    let mut verified = Verified::default();
    for ds in &live {
        verified.record(ds, kubernetes_image_puller::labels::spec_hash_of(ds).unwrap());
    }
    let edited = text.replacen("team-50/image-1:v1.0", "team-50/image-1:v1.1", 1);
    assert_ne!(edited, text);
    let instance = render::instance(&config).to_owned();
    let known = HashSet::new();
    let one_changed = measure(|| {
        let c = Arc::new(config::load_toml_str(black_box(&edited), "bench.toml", &NoVars).unwrap());
        let desired = render::desired(&c, &options);
        let actions = reconcile::plan(&desired, &live, &instance, &known, &verified, WriteStrategy::default());
        let updates = actions.iter().filter(|a| matches!(a, Action::Update { .. })).count();
        assert_eq!(updates, 1, "one set changed");
        assert_eq!(desired.iter().filter(|d| d.is_built()).count(), 1, "one object built");
        black_box(actions);
    });
    report("reload + plan, 1 of 100 sets edited", &one_changed, true);

    // The webhook's answer to an AdmissionReview of an edit of the ConfigMap holding this config (body parsed,
    // config loaded and checked, response built): what `kubectl apply` waits for. An UPDATE carries the old
    // object too, here the same config before a tag was bumped.
    let config_map = |text: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "k8s-image-puller", "namespace": "kubernetes-image-puller",
                         "labels": {"kubernetes-image-puller.io/config": "true"}},
            "data": {"config.toml": text}})
    };
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b1b2", "operation": "UPDATE", "namespace": "kubernetes-image-puller",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "object": config_map(&text),
            "oldObject": config_map(&text.replacen(":v1.0\"", ":v0.9\"", 1)),
        }
    })
    .to_string();
    let target = kubernetes_image_puller::webhook::Target {
        namespace: "kubernetes-image-puller".into(),
        config_map: None,
    };
    let answer = kubernetes_image_puller::webhook::review(review.as_bytes(), &target, &NoVars).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let admission = measure(|| {
        black_box(kubernetes_image_puller::webhook::review(black_box(review.as_bytes()), &target, &NoVars).unwrap());
    });
    let verdict = if admission.median < Duration::from_millis(10) {
        "PASS (median < 10 ms)"
    } else {
        "MISS (median >= 10 ms)"
    };
    println!(
        "{:<36} median {:>8.3} ms   min {:>8.3} ms   {verdict}",
        "webhook answer (AdmissionReview)",
        ms(admission.median),
        ms(admission.min)
    );

    let objects = measure(|| {
        let dss = render::render(black_box(&config), &options);
        assert_eq!(dss.len(), SETS);
        black_box(dss);
    });
    report("every object built (start, render)", &objects, false);
    let both = measure(|| {
        let c = config::load_toml_str(black_box(&text), "bench.toml", &NoVars).unwrap();
        black_box(render::render(&c, &options));
    });
    report("load + every object built", &both, false);
    let dss = render::render(&config, &options);
    let whole = measure(|| {
        for ds in &dss {
            black_box(render::spec_hash(black_box(ds)));
        }
    });
    report("(hash serializing each whole DS)", &whole, false);
    let yaml = measure(|| {
        black_box(render::to_yaml(black_box(&dss)).unwrap());
    });
    report("to_yaml (the `render` command)", &yaml, false);
}
