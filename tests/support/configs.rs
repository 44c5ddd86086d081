//! Config helpers of the offline tests: repository files, loading TOML, and asserting problems.

use std::path::PathBuf;

use kubernetes_image_puller::config::{self, Config, ConfigError, Problem};

use super::Vars;

/// Path of a file in the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn read_repo_file(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Loads TOML text as `test.toml` with no variables; panics with the problems if it fails.
pub fn load_ok(text: &str) -> Config {
    config::load_toml_str(text, "test.toml", &Vars::none()).unwrap_or_else(|e| panic!("expected a valid config:\n{e}"))
}

/// Loads TOML text as `test.toml` and returns its problems; panics if it loads.
pub fn problems(text: &str) -> Vec<Problem> {
    problems_with(text, &Vars::none())
}

pub fn problems_with(text: &str, vars: &Vars) -> Vec<Problem> {
    match config::load_toml_str(text, "test.toml", vars) {
        Ok(c) => panic!("expected problems, got a valid config: {c:#?}"),
        Err(e) => {
            let problems = e.problems().to_vec();
            assert!(!problems.is_empty(), "an invalid config must list its problems: {e}");
            problems
        }
    }
}

/// The only problem of an invalid config.
pub fn one_problem(text: &str) -> Problem {
    let mut p = problems(text);
    assert_eq!(p.len(), 1, "expected exactly one problem, got {p:#?}");
    p.remove(0)
}

/// Asserts a problem's location, field and (part of its) message.
#[track_caller]
pub fn assert_problem(p: &Problem, location: &str, field: &str, message_part: &str) {
    assert_eq!(p.location, location, "location of {p}");
    assert_eq!(p.field, field, "field of {p}");
    assert!(
        p.message.contains(message_part),
        "message of {p} should contain {message_part:?}"
    );
}

pub fn invalid_problems(e: &ConfigError) -> &[Problem] {
    match e {
        ConfigError::Invalid { problems, .. } => problems,
        other => panic!("expected an invalid config, got {other}"),
    }
}

/// A minimal valid set, to append to test documents.
pub const MINIMAL_SET: &str = "[[sets]]\nname = \"s\"\nimages = { a = \"busybox\" }\n";
