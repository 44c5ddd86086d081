//! Config core at scale: 100 sets x 100 images (10 000 containers).
//!
//! Times, per pass: `load_toml_str` (parse + validate + merge), `render` (which includes the spec hash of every
//! DaemonSet), and both together, against a target of 20 ms per pass. Prints median and min; a miss is
//! reported, never a failure (timings depend on the machine). Run with `cargo bench --bench render`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use kubernetes_image_puller::config::{self, VarSource};
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
        "{what:<34} median {:>8.3} ms   min {:>8.3} ms   {verdict}",
        ms(stats.median),
        ms(stats.min)
    );
}

fn main() {
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

    let render = measure(|| {
        let dss = render::render(black_box(&config), &options);
        assert_eq!(dss.len(), SETS);
        black_box(dss);
    });
    report("render + spec hash", &render, true);

    let both = measure(|| {
        let c = config::load_toml_str(black_box(&text), "bench.toml", &NoVars).unwrap();
        black_box(render::render(&c, &options));
    });
    report("full pass (load + render)", &both, true);

    // The hash render computes: each set's containers written from a template (render::rendered_spec_hash),
    // beside the whole object serialized (render::spec_hash): the same digest.
    let mut dss = render::render(&config, &options);
    let hash = measure(|| {
        for (ds, set) in dss.iter_mut().zip(&config.sets) {
            black_box(render::rendered_spec_hash(black_box(ds), set));
        }
    });
    report("of which the spec hash (100 DS)", &hash, false);
    let whole = measure(|| {
        for ds in &dss {
            black_box(render::spec_hash(black_box(ds)));
        }
    });
    report("  (serializing each whole DS)", &whole, false);
    let yaml = measure(|| {
        black_box(render::to_yaml(black_box(&dss)).unwrap());
    });
    report("to_yaml (the `render` command)", &yaml, false);
}
