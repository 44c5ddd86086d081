//! Shared fixtures of the mock-API tests: configs, rendered DaemonSets, the tower-test verifier (tier 1)
//! and the stateful fake API server (tier 2).
#![allow(dead_code)]

pub mod fake_api;
pub mod logs;
pub mod verifier;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use kubernetes_image_puller::config::{self, Config, VarSource};
use kubernetes_image_puller::render::{self, RenderOptions};

/// Namespace of every test config.
pub const NS: &str = "kip-test";
/// The instance label value of a config without `deployment_name`.
pub const INSTANCE: &str = "kubernetes-image-puller";

/// A VarSource with only the given variables: tests never depend on the process environment.
#[derive(Default, Clone)]
pub struct Vars(pub HashMap<String, String>);

impl VarSource for Vars {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }
    fn label(&self, name: &str) -> String {
        name.to_owned()
    }
}

/// One `[[sets]]` entry: name and `(container, image)` pairs.
pub fn set_toml(name: &str, images: &[(&str, &str)]) -> String {
    let images: Vec<String> = images.iter().map(|(c, i)| format!("{c} = \"{i}\"")).collect();
    format!("[[sets]]\nname = \"{name}\"\nimages = {{ {} }}\n", images.join(", "))
}

/// A whole config file in namespace [`NS`] with the given sets (from [`set_toml`]).
pub fn config_toml(sets: &[String]) -> String {
    format!(
        "namespace = \"{NS}\"\nkip_image = \"quay.io/kip/kip:1\"\n\n{}",
        sets.join("\n")
    )
}

pub fn load(text: &str) -> Config {
    config::load_toml_str(text, "test.toml", &Vars::default()).expect("test config is valid")
}

/// What the controller would apply for `text` (plain Kubernetes, no owner).
pub fn rendered(text: &str) -> Vec<DaemonSet> {
    render::render(&load(text), &RenderOptions::default())
}

pub fn arcs(list: &[DaemonSet]) -> Vec<Arc<DaemonSet>> {
    list.iter().cloned().map(Arc::new).collect()
}

/// `a=b&c=d` with percent-decoding (and `+` as space), as the API server reads a query string.
pub fn parse_query(query: &str) -> std::collections::BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
