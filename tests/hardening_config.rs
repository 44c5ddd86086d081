//! Hostile and oversized config input, table by table (issue 10, "Config input"): what is read at all, what
//! the API server would refuse, what it accepts, and that every problem is reported at once. Each case gives
//! the exact message (or its essential part) it must produce.

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use kubernetes_image_puller::config::{
    self, CONFIG_FILE_KEY, Config, ConfigError, DEFAULT_KIP_IMAGE, DEFAULT_NAMESPACE, Image, ImageSet, MAX_CONFIG_BYTES,
};
use kubernetes_image_puller::render::{self, MAX_OBJECT_BYTES, RenderOptions};
use support::{MINIMAL_SET, Vars, load_ok, problems, problems_with, read_repo_file, repo_path};

const PULLER: &str = env!("CARGO_BIN_EXE_kubernetes-image-puller");

/// Loads `path` on another thread: a load that blocks (on a FIFO, say) fails the test instead of hanging it.
fn load_within(path: &Path, vars: Vars, limit: Duration) -> Result<Config, ConfigError> {
    let (tx, rx) = mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(config::load(Some(&owned), &vars));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("loading {} did not finish within {limit:?}", path.display()))
}

fn load_err(path: &Path) -> String {
    match load_within(path, Vars::none(), Duration::from_secs(10)) {
        Ok(c) => panic!("{} loaded: {c:?}", path.display()),
        Err(e) => e.to_string(),
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

const NOT_REGULAR: &str = "not a regular file: give a TOML file or a mounted ConfigMap directory";

// ---------------------------------------------------------------------------------------------------------------
// What is read: regular files only, at most MAX_CONFIG_BYTES, UTF-8

#[test]
fn special_files_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    mkfifo(&fifo);
    let socket = dir.path().join("socket.toml");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fifo_link = dir.path().join("link-to-fifo.toml");
    std::os::unix::fs::symlink(&fifo, &fifo_link).unwrap();

    let cases: Vec<(PathBuf, &str)> = vec![
        (fifo.clone(), "a FIFO (named pipe)"),
        (fifo_link, "a FIFO (named pipe)"),
        (socket, "a socket"),
        ("/dev/zero".into(), "a character device"),
        ("/dev/null".into(), "a character device"),
        ("/dev/urandom".into(), "a character device"),
        ("/dev/tty".into(), "a character device"),
    ];
    for (path, kind) in cases {
        if std::fs::metadata(&path).is_err() {
            eprintln!("skipped {}: not present here", path.display());
            continue;
        }
        assert_eq!(
            load_err(&path),
            format!("cannot read config {}: it is {kind}, {NOT_REGULAR}", path.display()),
        );
    }
}

#[test]
fn a_fifo_does_not_block_even_with_a_writer_waiting() {
    // A writer that never writes: the old code would wait for its data forever.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("kip.toml");
    mkfifo(&fifo);
    let writer_path = fifo.clone();
    std::thread::spawn(move || {
        if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&writer_path) {
            std::thread::sleep(Duration::from_secs(30));
            let _ = w.write_all(b"x");
        }
    });
    let e = load_err(&fifo);
    assert!(e.ends_with(&format!("it is a FIFO (named pipe), {NOT_REGULAR}")), "{e}");
}

#[test]
fn size_cap_is_one_mebibyte() {
    assert_eq!(MAX_CONFIG_BYTES, 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    // At the cap: read and loaded (a comment pads it).
    let at_cap = dir.path().join("at-cap.toml");
    let mut text = MINIMAL_SET.to_owned();
    text.push('#');
    text.push_str(&"x".repeat(MAX_CONFIG_BYTES as usize - text.len()));
    assert_eq!(text.len() as u64, MAX_CONFIG_BYTES);
    std::fs::write(&at_cap, &text).unwrap();
    assert_eq!(
        load_within(&at_cap, Vars::none(), Duration::from_secs(30))
            .unwrap()
            .sets
            .len(),
        1
    );

    let cases = [(MAX_CONFIG_BYTES + 1, "one byte over"), (50 * 1024 * 1024, "50 MB")];
    for (size, what) in cases {
        let path = dir.path().join("big.toml");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap(); // sparse: nothing is written, and nothing must be read
        assert_eq!(
            load_err(&path),
            format!(
                "cannot read config {}: it is {size} bytes, over the limit of 1048576 bytes (1 MiB, the most a ConfigMap can hold)",
                path.display()
            ),
            "{what}"
        );
    }
}

#[test]
fn non_utf8_is_located_by_line_column_and_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    // (content, bad byte, line, column, byte offset); columns count characters, as the TOML errors do.
    let cases: [(&[u8], u8, usize, usize, usize); 3] = [
        (b"\xff", 0xFF, 1, 1, 0),
        (
            b"[[sets]]\nname = \"s\"\nimages = { a = \"b\xc3\x28\" }\n",
            0xC3,
            3,
            18,
            37,
        ),
        ("# é\nxé".as_bytes(), 0x80, 2, 3, 8),
    ];
    for (bytes, byte, line, column, offset) in cases {
        let path = dir.path().join("bad.toml");
        let mut content = bytes.to_vec();
        if content.ends_with("é".as_bytes()) {
            content.push(0x80); // a lone continuation byte
        }
        std::fs::write(&path, &content).unwrap();
        assert_eq!(
            load_err(&path),
            format!(
                "cannot read config {}: not UTF-8 text: byte 0x{byte:02X} at line {line}, column {column} (byte offset {offset}); save the file as UTF-8",
                path.display()
            )
        );
    }
}

#[test]
fn regular_files_through_symlinks_are_read() {
    // The kubelet's ConfigMap layout: KEY -> ..data/KEY, ..data -> ..<timestamp>/.
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("..2026_11_26_10_00_00.000000001");
    std::fs::create_dir(&stamp).unwrap();
    std::fs::write(stamp.join(CONFIG_FILE_KEY), MINIMAL_SET).unwrap();
    std::os::unix::fs::symlink(&stamp, dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.toml", dir.path().join(CONFIG_FILE_KEY)).unwrap();
    let c = load_within(dir.path(), Vars::none(), Duration::from_secs(10)).unwrap();
    assert_eq!(c.sets[0].name, "s");
    // The file itself, through the link.
    let c = load_within(&dir.path().join(CONFIG_FILE_KEY), Vars::none(), Duration::from_secs(10)).unwrap();
    assert_eq!(c.sets[0].name, "s");
}

#[test]
fn config_toml_in_a_directory_must_be_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(CONFIG_FILE_KEY);
    std::fs::create_dir(&file).unwrap();
    assert_eq!(
        load_err(dir.path()),
        format!(
            "cannot read config {}: it is a directory, {NOT_REGULAR}",
            file.display()
        )
    );
}

// ---------------------------------------------------------------------------------------------------------------
// ConfigMap directory of upstream keys: a key file that cannot be read is an error naming it, never a silent
// fallback to the environment variable of the same name

#[test]
fn unreadable_key_files_are_errors_not_env_fallbacks() {
    // The env holds a valid value for each: none may be used.
    let env = Vars::new(&[
        ("IMAGES", "a=busybox"),
        ("NODE_SELECTOR", "{\"pool\": \"a\"}"),
        ("CACHING_MEMORY_LIMIT", "30Mi"),
    ]);
    type Make = fn(&Path);
    let cases: [(&str, Make, &str); 7] = [
        (
            "IMAGES",
            |p| std::fs::File::create(p).unwrap().set_len(2 * 1024 * 1024).unwrap(),
            "it is 2097152 bytes, over the limit of 1048576 bytes (1 MiB, the most a ConfigMap can hold)",
        ),
        (
            "IMAGES",
            |p| std::fs::create_dir(p).unwrap(),
            "it is a directory, not a regular file: give a TOML file or a mounted ConfigMap directory",
        ),
        (
            "IMAGES",
            |p| std::fs::write(p, b"a=busybox\xff").unwrap(),
            "not UTF-8 text: byte 0xFF at line 1, column 10 (byte offset 9); save the file as UTF-8",
        ),
        ("IMAGES", |p| mkfifo(p), "it is a FIFO (named pipe), not a regular file"),
        (
            "NODE_SELECTOR",
            |p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
            "it is a character device, not a regular file",
        ),
        (
            "CACHING_MEMORY_LIMIT",
            |p| std::os::unix::fs::symlink(p, p).unwrap(), // a loop: unreadable even as root
            "cannot read: Too many levels of symbolic links",
        ),
        (
            "IMAGES",
            |p| std::os::unix::fs::symlink("..data/IMAGES", p).unwrap(), // dangling
            "cannot read: No such file or directory",
        ),
    ];
    for (key, make, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(key);
        make(&file);
        let e = load_within(dir.path(), env.clone(), Duration::from_secs(10)).expect_err(key);
        let p = e.problems();
        assert_eq!(p.len(), 1, "{key}: {e}");
        assert_eq!(p[0].location, file.display().to_string(), "{e}");
        assert!(
            p[0].message.starts_with(message),
            "{key}: {} should start with {message:?}",
            p[0].message
        );
    }
    // Neighbours: an absent or empty key file does fall back to the variable.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("IMAGES"), "  \n").unwrap();
    let c = load_within(dir.path(), env.clone(), Duration::from_secs(10)).unwrap();
    assert_eq!(c.sets[0].images[0].reference, "busybox");
    assert_eq!(c.sets[0].resources.memory_limit, "30Mi");
}

#[test]
fn unreadable_key_file_beside_other_problems() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("TOLERATIONS")).unwrap();
    std::fs::write(dir.path().join("IMAGES"), "a=busybox;b=Not An Image").unwrap();
    let e = load_within(dir.path(), Vars::none(), Duration::from_secs(10)).unwrap_err();
    let got: Vec<(String, &str)> = e
        .problems()
        .iter()
        .map(|p| (p.location.clone(), p.message.as_str()))
        .collect();
    let file = |n: &str| dir.path().join(n).display().to_string();
    assert_eq!(
        got,
        [
            (
                file("TOLERATIONS"),
                "it is a directory, not a regular file: give a TOML file or a mounted ConfigMap directory"
            ),
            (
                file("IMAGES"),
                "\"Not An Image\" is not an image reference: give e.g. \"quay.io/org/image:tag\" with no spaces"
            ),
        ],
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Values quoted in errors are shortened

#[test]
fn long_values_are_quoted_shortened() {
    let huge = "x".repeat(2_000_000);
    let cases: Vec<(String, String)> = vec![
        // Our own messages quote the first 120 characters and give the length.
        (
            format!("[[sets]]\nname = \"s\"\nimages = {{ a = \"{huge} y\" }}\n"),
            format!("\"{}\"… (2000002 bytes) is not an image reference", "x".repeat(120)),
        ),
        (
            format!("[[sets]]\nname = \"{huge}\"\nimages = {{ a = \"busybox\" }}\n"),
            format!("\"{}\"… (2000000 bytes) is not a valid name", "x".repeat(120)),
        ),
        (
            format!("{MINIMAL_SET}memory_limit = \"{huge}\"\n"),
            format!("\"{}\"… (2000000 bytes) is not a quantity", "x".repeat(120)),
        ),
        // serde's messages echo values whole: the message itself is cut.
        (
            format!("caching_interval_hours = \"{huge}\"\n{MINIMAL_SET}"),
            "… (message of 2000037 bytes shortened)".to_owned(),
        ),
    ];
    for (text, expected) in cases {
        let p = problems(&text);
        let all: String = p.iter().map(|p| p.message.clone()).collect::<Vec<_>>().join("\n");
        assert!(all.contains(&expected), "expected {expected:.200} in {all:.1000}");
        assert!(
            p.iter().all(|p| p.message.len() < 1000 && p.field.len() < 1000),
            "{all:.2000}"
        );
    }
    // Upstream variables too.
    let e = config::load_from_vars(&Vars::new(&[("IMAGES", &format!("a={huge};b"))]), "environment").unwrap_err();
    assert!(e.to_string().len() < 2000, "{:.3000}", e.to_string());
    assert!(e.to_string().contains("… (2000000 bytes)"), "{:.3000}", e.to_string());
}

// ---------------------------------------------------------------------------------------------------------------
// Every problem at once: unknown keys, type errors and invalid values together; a syntax error alone

/// The config behind the README's three-problem example (README.md, "Every problem is reported").
const README_THREE_PROBLEMS: &str = r#"namespace = "image-cache"

[defaults]
memory_limt = "20Mi"

[[sets]]
name = "gpu"
images = { cuda = "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04" }
memory_request = "50Mb"

[[sets]]
images = { a = "busybox" }
name = "gpu"
"#;

#[test]
fn readme_three_problem_example_is_what_check_prints() {
    let e = config::load_toml_str(README_THREE_PROBLEMS, "config.toml", &Vars::none()).unwrap_err();
    assert_eq!(e.problems().len(), 3, "{e}");
    let printed = format!("error: {e}");
    let readme = read_repo_file("README.md");
    let block = readme
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a text block in README.md");
    assert_eq!(
        printed.trim_end(),
        block.trim_end(),
        "README.md must show what check prints"
    );
}

#[test]
fn unknown_keys_type_errors_and_invalid_values_together() {
    let text = r#"namespac = "x"
caching_interval_hours = "six"

[defaults]
cpu_limit = "lots"

[[sets]]
name = "one"
memory_limit = 5
images = { a = "busybox", b = 7 }

[[sets]]
name = "two"
tolerations = [{ key = "k", operator = "Sometimes" }]
images = { c = "Not An Image" }

[[sets]]
images = { d = "busybox" }

[[sets]]
name = "Four"
imagez = { e = "busybox" }
"#;
    let p = problems(text);
    let got: Vec<(&str, &str, &str)> = p
        .iter()
        .map(|p| (p.location.as_str(), p.field.as_str(), p.message.as_str()))
        .collect();
    let expected = [
        (
            "test.toml:1:1",
            "namespac",
            "unknown field `namespac`; did you mean `namespace`?",
        ),
        (
            "test.toml:2:26",
            "caching_interval_hours",
            "invalid type: string \"six\", expected i64",
        ),
        ("test.toml:5:1", "defaults.cpu_limit", "\"lots\" is not a quantity"),
        (
            "test.toml:9:16",
            "sets[0].memory_limit",
            "invalid type: integer `5`, expected a string",
        ),
        (
            "test.toml:10:31",
            "sets[0].images.b",
            "invalid type: integer `7`, expected a string",
        ),
        (
            "test.toml:14:40",
            "sets[1].tolerations[0].operator",
            "unknown variant `Sometimes`, expected `Exists` or `Equal`",
        ),
        (
            "test.toml:15:12",
            "sets[1] (two).images.c",
            "\"Not An Image\" is not an image reference",
        ),
        ("test.toml:17:1", "sets[2]", "missing field `name`"),
        ("test.toml:21:1", "sets[3] (Four).name", "\"Four\" is not a valid name"),
        (
            "test.toml:22:1",
            "sets[3].imagez",
            "unknown field `imagez`; did you mean `images`?",
        ),
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (g, e) in got.iter().zip(expected) {
        assert_eq!((g.0, g.1), (e.0, e.1), "{got:#?}");
        assert!(g.2.starts_with(e.2), "{:?} should start with {:?}", g.2, e.2);
    }
}

#[test]
fn a_type_error_is_reported_once_not_with_its_consequences() {
    // Leaving out the wrong `weight` makes its term lack a required field: that is not reported again.
    let text = format!(
        "{MINIMAL_SET}[[sets.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution]]\nweight = \"heavy\"\npreference = {{}}\n"
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(
        (p[0].location.as_str(), p[0].field.as_str(), p[0].message.as_str()),
        (
            "test.toml:5:10",
            "sets[0].affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
            "invalid type: string \"heavy\", expected i32"
        )
    );
    // A set whose `images` has the wrong type: no "has no images" besides.
    let p = problems("[[sets]]\nname = \"s\"\nimages = 5\n");
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].field, "sets[0].images");
}

#[test]
fn a_syntax_error_stands_alone() {
    // An unknown key and an invalid value besides: only the syntax error is reported.
    let text = format!("namespac = \"x\"\n{MINIMAL_SET}memory_limit = \"lots\"\ncpu_limit = \n");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].location, "test.toml:6:13");
    assert_eq!(p[0].message, "string values must be quoted, expected literal string");
}

// ---------------------------------------------------------------------------------------------------------------
// What the API server refuses: refused here, naming the field, the limit and the value's size

#[test]
fn label_valued_fields_are_at_most_63_characters() {
    let name = |n: usize| "d".repeat(n);
    let cases: Vec<(String, &str, String)> = vec![
        (
            format!("deployment_name = \"{}\"\n{MINIMAL_SET}", name(121)),
            "deployment_name",
            format!(
                "\"{}\" is 121 characters: it becomes the value of the label app.kubernetes.io/instance, and a label value is at most 63 characters",
                name(120)
            )
            .replace(&format!("\"{}\"", name(120)), &format!("\"{}\"… (121 bytes)", name(120))),
        ),
        (
            format!("deployment_name = \"{}\"\n{MINIMAL_SET}", name(64)),
            "deployment_name",
            format!("\"{}\" is 64 characters: it becomes the value of the label app.kubernetes.io/instance", name(64)),
        ),
        (
            format!("[[sets]]\nname = \"{}\"\nimages = {{ a = \"busybox\" }}\n", name(64)),
            "sets[0] (dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd).name",
            format!("\"{}\" is not a valid name: use 1 to 63 lowercase letters", name(64)),
        ),
        (
            format!("{MINIMAL_SET}images = {{ {} = \"busybox\" }}\n", name(64)).replace("images = { a = \"busybox\" }\n", ""),
            "sets[0] (s).images.dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
            "container name: ".to_owned(),
        ),
        (
            format!("{MINIMAL_SET}node_selector = {{ pool = \"{}\" }}\n", name(64)),
            "sets[0] (s).node_selector",
            format!("value \"{}\" of \"pool\" is 64 characters: a label value is at most 63", name(64)),
        ),
        (
            format!("{MINIMAL_SET}tolerations = [{{ key = \"k\", value = \"{}\" }}]\n", name(64)),
            "sets[0] (s).tolerations[0]",
            format!("value \"{}\" is 64 characters: a taint value is at most 63", name(64)),
        ),
    ];
    for (text, field, message) in cases {
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].field, field, "{}", p[0]);
        assert!(
            p[0].message.starts_with(&message),
            "{:?}\nshould start with\n{message:?}",
            p[0].message
        );
    }
    // At the limit: accepted.
    let c = load_ok(&format!(
        "deployment_name = \"{}\"\n[[sets]]\nname = \"{}\"\nnode_selector = {{ pool = \"{}\" }}\nimages = {{ {} = \"busybox\" }}\n",
        name(63),
        name(63),
        name(63),
        name(63)
    ));
    assert_eq!(render::instance(&c).len(), 63);
    // From the environment too.
    let p = problems_with(MINIMAL_SET, &Vars::new(&[("DEPLOYMENT_NAME", &name(64))]));
    assert_eq!(p[0].location, "DEPLOYMENT_NAME");
    assert!(p[0].message.contains("is 64 characters"), "{}", p[0]);
    let e = config::load_from_vars(
        &Vars::new(&[("IMAGES", "a=busybox"), ("DEPLOYMENT_NAME", &name(64))]),
        "environment",
    )
    .unwrap_err();
    assert_eq!(e.problems()[0].location, "DEPLOYMENT_NAME", "{e}");
}

#[test]
fn affinity_keys_operators_and_values_follow_the_api() {
    let node = |expr: &str| {
        format!(
            "{MINIMAL_SET}[sets.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution]\nnodeSelectorTerms = [{{ matchExpressions = [{expr}] }}]\n"
        )
    };
    let base = "sets[0] (s).affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0]";
    let cases: Vec<(String, Vec<(String, &str)>)> = vec![
        (
            node("{ key = \"bad key!\", operator = \"Sometimes\", values = [\"x\"] }"),
            vec![
                (format!("{base}.key"), "\"bad key!\" is not a valid label key"),
                (
                    format!("{base}.operator"),
                    "operator \"Sometimes\" is not supported: use In, NotIn, Exists, DoesNotExist, Gt or Lt",
                ),
            ],
        ),
        (
            node("{ key = \"pool\", operator = \"In\" }"),
            vec![(format!("{base}.values"), "operator In needs at least one value")],
        ),
        (
            node("{ key = \"pool\", operator = \"Exists\", values = [\"a\"] }"),
            vec![(format!("{base}.values"), "operator Exists takes no values")],
        ),
        (
            node("{ key = \"cores\", operator = \"Gt\", values = [\"1\", \"2\"] }"),
            vec![(format!("{base}.values"), "operator Gt takes exactly one value (a whole number)")],
        ),
        (
            format!("{MINIMAL_SET}[sets.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution]\nnodeSelectorTerms = []\n"),
            vec![(
                "sets[0] (s).affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms".into(),
                "must have at least one node selector term",
            )],
        ),
        (
            format!("{MINIMAL_SET}[[sets.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution]]\nweight = 101\npreference = {{ matchFields = [{{ key = \"metadata.labels\", operator = \"In\", values = [\"a\"] }}] }}\n"),
            vec![
                (
                    "sets[0] (s).affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight".into(),
                    "weight 101 is out of range: use 1 to 100",
                ),
                (
                    "sets[0] (s).affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchFields[0].key".into(),
                    "\"metadata.labels\" is not a supported field: matchFields takes only \"metadata.name\"",
                ),
            ],
        ),
        (
            format!("[[defaults.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution]]\ntopologyKey = \"\"\nlabelSelector = {{ matchExpressions = [{{ key = \"app\", operator = \"Gt\", values = [\"1\"] }}] }}\n{MINIMAL_SET}"),
            vec![
                (
                    "defaults.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey".into(),
                    "topologyKey is required",
                ),
                (
                    "defaults.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator".into(),
                    "operator \"Gt\" is not supported: use In, NotIn, Exists or DoesNotExist",
                ),
            ],
        ),
    ];
    for (text, expected) in cases {
        let p = problems(&text);
        let got: Vec<(&str, &str)> = p.iter().map(|p| (p.field.as_str(), p.message.as_str())).collect();
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for ((field, message), (want_field, want_message)) in got.iter().zip(&expected) {
            assert_eq!(field, want_field, "{got:#?}");
            assert!(
                message.starts_with(want_message),
                "{message:?} should start with {want_message:?}"
            );
        }
    }
    // Accepted: every operator used as the API allows.
    load_ok(&node(
        "{ key = \"a\", operator = \"In\", values = [\"x\"] }, { key = \"example.com/b\", operator = \"DoesNotExist\" }, { key = \"c\", operator = \"Lt\", values = [\"10\"] }",
    ));
}

#[test]
fn annotations_are_at_most_256_kib_in_total() {
    const LIMIT: usize = 262_144;
    // Keys and values of what the puller adds: the spec hash and the scanner notes (OpenShift's included).
    let notes: usize = render::CHECKOV_SKIPS
        .iter()
        .chain([&render::CHECKOV_SKIP_OPENSHIFT])
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let own = "kubernetes-image-puller/spec-hash".len() + 32 + notes;
    let key = "example.com/note";
    let with = |n: usize| format!("{MINIMAL_SET}annotations = {{ \"{key}\" = \"{}\" }}\n", "a".repeat(n));
    // Exactly at the limit: accepted.
    load_ok(&with(LIMIT - own - key.len()));
    for n in [LIMIT - own - key.len() + 1, 300_000] {
        let p = problems(&with(n));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].field, "sets[0] (s).annotations");
        assert_eq!(
            p[0].message,
            format!(
                "the annotations take {} bytes (keys and values, with the defaults' and the puller's own): the API server allows at most 262144 bytes (256 KiB) of annotations on an object",
                n + key.len() + own
            )
        );
    }
    // The defaults count with the set's own: each half fits, together they do not.
    let half = "b".repeat(LIMIT / 2);
    let p = problems(&format!(
        "[defaults]\nannotations = {{ x = \"{half}\" }}\n{MINIMAL_SET}annotations = {{ y = \"{half}\" }}\n"
    ));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].message
            .starts_with(&format!("the annotations take {} bytes", LIMIT + 2 + own)),
        "{}",
        p[0]
    );
}

/// What `load` makes of a set with only `images`, for rendering by hand.
fn plain_config(images: &BTreeMap<String, String>) -> Config {
    Config {
        namespace: DEFAULT_NAMESPACE.into(),
        caching_interval_hours: 1,
        refresh_check_interval: kubernetes_image_puller::config::DEFAULT_REFRESH_CHECK_INTERVAL,
        warm_gate: None,
        kip_image: DEFAULT_KIP_IMAGE.into(),
        deployment_name: None,
        sets: vec![ImageSet {
            name: "huge".into(),
            images: images
                .iter()
                .map(|(n, r)| Image {
                    name: n.clone(),
                    reference: r.clone(),
                })
                .collect(),
            ..ImageSet::default()
        }],
    }
}

#[test]
fn a_daemonset_over_one_mebibyte_is_refused_naming_the_set() {
    assert_eq!(MAX_OBJECT_BYTES, 1024 * 1024);
    let images = |n: usize| -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("i{i:05}"), format!("registry.example.com/team/image-{i:05}:v1")))
            .collect()
    };
    let toml = |images: &BTreeMap<String, String>| {
        let mut t = String::from("[[sets]]\nname = \"huge\"\n[sets.images]\n");
        for (n, r) in images {
            t.push_str(&format!("{n} = \"{r}\"\n"));
        }
        t
    };
    let many = images(10_000);
    let config = plain_config(&many);
    let size = serde_json::to_vec(&render::render_set(&config, &config.sets[0], &RenderOptions::default()))
        .unwrap()
        .len();
    assert!(size > 4_000_000, "{size}");
    let p = problems(&toml(&many));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].location, "test.toml:3:7");
    assert_eq!(p[0].field, "sets[0] (huge).images");
    assert_eq!(
        p[0].message,
        format!(
            "the DaemonSet of this set would be {size} bytes (10000 images): over the limit of 1048576 bytes (1 MiB) for one object; split the images over several sets"
        )
    );
    // The same set from the upstream variables: named by the variable.
    let value: String = many.iter().map(|(n, r)| format!("{n}={r};")).collect();
    let e = config::load_from_vars(
        &Vars::new(&[("IMAGES", &value), ("DAEMONSET_NAME", "huge")]),
        "environment",
    )
    .unwrap_err();
    assert_eq!(e.problems().len(), 1, "{e}");
    assert_eq!(e.problems()[0].location, "IMAGES");
    assert!(
        e.problems()[0].message.contains("over the limit of 1048576 bytes"),
        "{e}"
    );
    // A large set that fits is accepted.
    let c = load_ok(&toml(&images(1_000)));
    assert_eq!(c.sets[0].images.len(), 1_000);
}

// ---------------------------------------------------------------------------------------------------------------
// What the API server accepts: accepted here

#[test]
fn empty_toleration_operator_and_effect_are_accepted() {
    let c = load_ok(&format!(
        "{MINIMAL_SET}tolerations = [{{ key = \"k\", operator = \"\", value = \"v\", effect = \"\" }}, {{ operator = \"Exists\", effect = \"\" }}]\n"
    ));
    let t = &c.sets[0].tolerations;
    // Rendered as left out: the API stores "" as absent, so "" would never match the live object.
    assert_eq!((t[0].operator.as_deref(), t[0].effect.as_deref()), (None, None));
    assert_eq!(
        (t[1].operator.as_deref(), t[1].effect.as_deref()),
        (Some("Exists"), None)
    );
    // Neighbours the API refuses: "" is Equal, so it needs a key; "" is not NoExecute.
    let cases = [
        (
            "{ operator = \"\" }",
            "a toleration with no key must have operator \"Exists\"",
        ),
        (
            "{ key = \"k\", effect = \"\", tolerationSeconds = 5 }",
            "tolerationSeconds is only allowed with effect \"NoExecute\"",
        ),
        (
            "{ key = \"k\", effect = \"All\" }",
            "unknown variant `All`, expected one of `NoSchedule`",
        ),
    ];
    for (toleration, message) in cases {
        let p = problems(&format!("{MINIMAL_SET}tolerations = [{toleration}]\n"));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].message.starts_with(message), "{}", p[0]);
    }
    // The upstream TOLERATIONS variable too.
    let c = config::load_from_vars(
        &Vars::new(&[
            ("IMAGES", "a=busybox"),
            ("TOLERATIONS", r#"[{"key": "k", "operator": "", "effect": ""}]"#),
        ]),
        "environment",
    )
    .unwrap();
    assert_eq!(c.sets[0].tolerations[0].key.as_deref(), Some("k"));
}

// ---------------------------------------------------------------------------------------------------------------
// IMAGES: one malformed entry does not hide the checks of the others

#[test]
fn one_malformed_images_entry_does_not_hide_the_others() {
    let cases: [(&str, &[&str]); 3] = [
        (
            "a=busybox;broken;b=Not An Image",
            &[
                "entry 2 \"broken\" has no '=': write name=image",
                "\"Not An Image\" is not an image reference: give e.g. \"quay.io/org/image:tag\" with no spaces",
            ],
        ),
        (
            "Bad=busybox;=x;kip-sleep-install=busybox",
            &[
                "entry 2 \"=x\" has an empty name or image: write name=image",
                "container name: \"Bad\" is not a valid name",
                "container name \"kip-sleep-install\" is reserved for the sleeper's init container",
            ],
        ),
        // Only malformed entries: "no images" is not added on top.
        (
            "broken;x==y",
            &[
                "entry 1 \"broken\" has no '='",
                "entry 2 \"x==y\" has more than one '='",
            ],
        ),
    ];
    for (value, messages) in cases {
        let e = config::load_from_vars(&Vars::new(&[("IMAGES", value)]), "environment").unwrap_err();
        let p = e.problems();
        assert_eq!(p.len(), messages.len(), "{value}: {e}");
        for (p, m) in p.iter().zip(messages) {
            assert_eq!(p.location, "IMAGES");
            assert!(
                p.message.starts_with(m),
                "{value}: {:?} should start with {m:?}",
                p.message
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Documentation: every TOML snippet of README.md and docs/*.md passes `check`

fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start() == "```toml" => current = Some(String::new()),
            Some(block) if line.trim_start() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn every_toml_snippet_of_the_docs_passes_check() {
    let mut docs = vec![repo_path("README.md")];
    for entry in std::fs::read_dir(repo_path("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (i, block) in toml_blocks(&text).into_iter().enumerate() {
            let file = dir.path().join(format!("snippet-{checked}.toml"));
            std::fs::write(&file, &block).unwrap();
            let out = Command::new(PULLER)
                .args(["check", "--config"])
                .arg(&file)
                .env_clear()
                .output()
                .unwrap();
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("config ok"),
                "TOML block {} of {} fails check:\n{block}\n{}{}",
                i + 1,
                doc.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "no TOML snippet found in {docs:?}");
}

#[test]
fn a_non_utf8_variable_is_an_error_not_unset() {
    use std::os::unix::ffi::OsStrExt;
    let value = std::ffi::OsStr::from_bytes(b"a=busybox;b=alpine\xff");
    let out = Command::new(PULLER)
        .arg("check")
        .env_clear()
        .env("IMAGES", value)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("  - IMAGES: \"alpine\u{fffd}\" is not an image reference"),
        "{stdout}"
    );
}

#[test]
fn thousands_of_problems_cost_no_more_than_the_file() {
    // Each problem once counted the newlines from the top of the file: 15,000 bad sets took two minutes.
    let sets = 10_000;
    let text: String = (0..sets)
        .map(|i| format!("[[sets]]\nname = \"S{i}\"\nmemory_limit = 5\nimages = {{ a = \"Bad Image\" }}\n"))
        .collect();
    assert!(text.len() as u64 <= MAX_CONFIG_BYTES);
    let started = std::time::Instant::now();
    let p = problems(&text);
    let took = started.elapsed();
    assert_eq!(p.len(), 3 * sets);
    assert_eq!(p.last().unwrap().location, format!("test.toml:{}:12", 4 * sets));
    assert!(took < Duration::from_secs(60), "{took:?}");
}
