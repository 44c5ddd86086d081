//! Where a config comes from: a TOML file, a mounted ConfigMap directory, or the upstream env vars.

use std::path::{Path, PathBuf};

use super::env::{VarSource, raw_from_vars, var_for};
use super::model::RawConfig;
use super::resolve::{FieldProblem, Seg, describe, resolve};
use super::toml_source::TomlDoc;
use super::{Config, ConfigError, Problem};

/// The key a mounted ConfigMap uses for the TOML file.
pub const CONFIG_FILE_KEY: &str = "config.toml";

/// The process environment.
pub struct Env;

impl VarSource for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
    fn label(&self, name: &str) -> String {
        name.to_owned()
    }
}

/// An upstream-style ConfigMap mounted as a directory: one file per variable, falling back to the env.
struct DirVars<'a> {
    dir: &'a Path,
    env: &'a dyn VarSource,
}

impl DirVars<'_> {
    fn file(&self, name: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(name)).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }
}

impl VarSource for DirVars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.file(name).or_else(|| self.env.get(name))
    }
    fn label(&self, name: &str) -> String {
        if self.file(name).is_some() {
            self.dir.join(name).display().to_string()
        } else {
            self.env.label(name)
        }
    }
}

/// Loads and checks the config: from `path` (a TOML file, or a directory holding `config.toml` or
/// upstream-style keys), or from the env vars when no path is given.
pub fn load(path: Option<&Path>, env: &dyn VarSource) -> Result<Config, ConfigError> {
    let Some(path) = path else {
        return load_from_vars(env, "environment");
    };
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_dir() {
        let file = path.join(CONFIG_FILE_KEY);
        if file.exists() {
            return load_file(&file, env);
        }
        let origin = path.display().to_string();
        return load_from_vars(&DirVars { dir: path, env }, &origin);
    }
    load_file(path, env)
}

fn load_file(path: &Path, env: &dyn VarSource) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: PathBuf::from(path),
        source,
    })?;
    load_toml_str(&text, &path.display().to_string(), env)
}

/// Loads a TOML document; `origin` names it in errors. NAMESPACE, KIP_IMAGE and DEPLOYMENT_NAME from `env`
/// fill the fields the file leaves out.
pub fn load_toml_str(text: &str, origin: &str, env: &dyn VarSource) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        origin: origin.to_owned(),
        problems,
    };
    let (doc, mut raw) = TomlDoc::parse(text, origin).map_err(invalid)?;
    let from_env = fill_from_env(&mut raw, env);
    resolve(&raw).map_err(|problems| {
        let mut located: Vec<(usize, Problem)> = problems
            .into_iter()
            .map(|p| {
                let top = match p.path.first() {
                    Some(Seg::Key(k)) => k.as_str(),
                    _ => "",
                };
                let (location, offset) = if from_env.contains(&top) {
                    (env.label(var_for(&p.path)), 0)
                } else {
                    doc.locate(&p.path)
                };
                (
                    offset,
                    Problem {
                        location,
                        field: describe(&p.path, &raw),
                        message: p.message,
                    },
                )
            })
            .collect();
        // In the order they appear in the file.
        located.sort_by_key(|(offset, _)| *offset);
        invalid(located.into_iter().map(|(_, p)| p).collect())
    })
}

fn fill_from_env(raw: &mut RawConfig, env: &dyn VarSource) -> Vec<&'static str> {
    let mut filled = Vec::new();
    for (field, var, slot) in [
        ("namespace", "NAMESPACE", &mut raw.namespace),
        ("kip_image", "KIP_IMAGE", &mut raw.kip_image),
        ("deployment_name", "DEPLOYMENT_NAME", &mut raw.deployment_name),
    ] {
        if slot.is_none() {
            *slot = env.get(var);
            if slot.is_some() {
                filled.push(field);
            }
        }
    }
    filled
}

/// Loads the single set the upstream variables define; problems name the variable (or its file).
pub fn load_from_vars(vars: &dyn VarSource, origin: &str) -> Result<Config, ConfigError> {
    let (raw, mut problems) = raw_from_vars(vars);
    match resolve(&raw) {
        Ok(config) if problems.is_empty() => return Ok(config),
        Ok(_) => {}
        Err(more) => {
            let follow_on: Vec<Problem> = more
                .into_iter()
                .filter(|p| !already_reported(p, &problems, vars))
                .map(|p| Problem {
                    location: vars.label(var_for(&p.path)),
                    field: String::new(),
                    message: p.message,
                })
                .collect();
            problems.extend(follow_on);
        }
    }
    Err(ConfigError::Invalid {
        origin: origin.to_owned(),
        problems,
    })
}

/// A variable that failed to parse is left unset; skip the follow-on "missing" problems it causes.
fn already_reported(p: &FieldProblem, reported: &[Problem], vars: &dyn VarSource) -> bool {
    let label = vars.label(var_for(&p.path));
    reported.iter().any(|r| r.location == label)
}

/// The `data` of a ConfigMap read through the API, as variables (`IMAGES`, ...), falling back to the env;
/// errors name the key as `configmap/<name>:<key>`.
struct MapVars<'a> {
    data: &'a std::collections::BTreeMap<String, String>,
    origin: &'a str,
    env: &'a dyn VarSource,
}

impl MapVars<'_> {
    fn value(&self, name: &str) -> Option<String> {
        let text = self.data.get(name)?.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }
}

impl VarSource for MapVars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.value(name).or_else(|| self.env.get(name))
    }
    fn label(&self, name: &str) -> String {
        if self.value(name).is_some() {
            format!("{}:{name}", self.origin)
        } else {
            self.env.label(name)
        }
    }
}

/// Loads and checks a config from a ConfigMap's `data` as the API returns it: its `config.toml` key, else
/// the upstream-style keys, exactly as a mounted ConfigMap directory is read. Problems read
/// `configmap/<name>:config.toml:12:5: ...` (or `configmap/<name>:IMAGES: ...`).
pub fn load_config_map(
    name: &str,
    data: &std::collections::BTreeMap<String, String>,
    env: &dyn VarSource,
) -> Result<Config, ConfigError> {
    let origin = format!("configmap/{name}");
    if let Some(text) = data.get(CONFIG_FILE_KEY) {
        return load_toml_str(text, &format!("{origin}:{CONFIG_FILE_KEY}"), env);
    }
    let vars = MapVars {
        data,
        origin: &origin,
        env,
    };
    load_from_vars(&vars, &origin)
}
