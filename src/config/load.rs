//! Where a config comes from: a TOML file, a mounted ConfigMap directory, or the upstream env vars.

use std::collections::HashMap;
use std::path::Path;

use super::env::{UPSTREAM_VARS, VarSource, raw_from_vars, var_for};
use super::model::RawConfig;
use super::resolve::{FieldPath, FieldProblem, Seg, Tainted, describe, key, resolve};
use super::rules::shorten_message;
use super::toml_source::{TomlDoc, line_col};
use super::{Config, ConfigError, InputReason, Problem};

/// The key a mounted ConfigMap uses for the TOML file.
pub const CONFIG_FILE_KEY: &str = "config.toml";

/// The largest config file (or ConfigMap key file) that is read. A config usually comes from a ConfigMap, and
/// the API server refuses a ConfigMap whose data exceeds 1 MiB (Kubernetes `ValidateConfigMap`: total size
/// of data and binaryData <= `core.MaxSecretSize` = 1 MiB); the DaemonSets a larger file describes would not
/// fit in etcd either (see `render::MAX_OBJECT_BYTES`). Reading stops one byte past it.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The process environment.
pub struct Env;

impl VarSource for Env {
    fn get(&self, name: &str) -> Option<String> {
        // A value that is not UTF-8 is not taken for unset: its bad bytes show as U+FFFD and fail its check.
        let value = std::env::var_os(name)?.to_string_lossy().into_owned();
        (!value.trim().is_empty()).then_some(value)
    }
    fn label(&self, name: &str) -> String {
        name.to_owned()
    }
}

/// What a path is, for an error, unless it is a regular file (a directory is named too: where a file is
/// expected, it is refused like the others).
fn not_regular(file_type: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else {
        Some("not a regular file")
    }
}

/// Reads a config file as text: only a regular file (symlinks to one are followed, as in a mounted
/// ConfigMap), at most [`MAX_CONFIG_BYTES`], UTF-8. Never blocks on a FIFO and never reads a device.
pub(super) fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let input = |reason| ConfigError::Input {
        path: path.to_path_buf(),
        reason,
    };
    let check = |meta: &std::fs::Metadata| {
        if let Some(kind) = not_regular(meta.file_type()) {
            return Err(input(InputReason::NotRegular { kind }));
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(input(InputReason::TooLarge {
                size: meta.len(),
                limit: MAX_CONFIG_BYTES,
            }));
        }
        Ok(())
    };
    // Look before opening: opening a FIFO for reading blocks until a writer appears.
    check(&std::fs::metadata(path).map_err(read_err)?)?;
    // O_NONBLOCK and a second look at what was opened: the path may have been swapped in between.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    check(&meta)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).saturating_add(1));
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(input(InputReason::TooLarge {
            size: bytes.len() as u64,
            limit: MAX_CONFIG_BYTES,
        }));
    }
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        // The prefix is valid UTF-8 by definition of `valid_up_to`.
        let before = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let (line, column) = line_col(before, offset);
        input(InputReason::NotUtf8 {
            byte: bytes[offset],
            line,
            column,
            offset,
        })
    })
}

/// An upstream-style ConfigMap mounted as a directory: one file per variable, falling back to the env for a
/// variable whose file is absent or empty. A file that exists but cannot be read is a problem naming it,
/// never a silent fallback to the environment.
struct DirVars<'a> {
    dir: &'a Path,
    env: &'a dyn VarSource,
    /// The non-empty key files, trimmed.
    files: HashMap<&'static str, String>,
    /// Key files that exist but could not be read, with why.
    unreadable: Vec<(&'static str, Problem)>,
}

impl<'a> DirVars<'a> {
    fn read(dir: &'a Path, env: &'a dyn VarSource) -> Self {
        let mut vars = Self {
            dir,
            env,
            files: HashMap::new(),
            unreadable: Vec::new(),
        };
        for name in UPSTREAM_VARS {
            let path = dir.join(name);
            // Absent (not even a dangling symlink): the variable comes from the environment.
            if std::fs::symlink_metadata(&path).is_err() {
                continue;
            }
            match read_text(&path) {
                Ok(text) => {
                    let text = text.trim();
                    if !text.is_empty() {
                        vars.files.insert(name, text.to_owned());
                    }
                }
                Err(e) => {
                    let message = match e {
                        ConfigError::Input { reason, .. } => reason.to_string(),
                        ConfigError::Read { source, .. } => format!("cannot read: {source}"),
                        ConfigError::Invalid { .. } => e.to_string(),
                    };
                    let location = path.display().to_string();
                    vars.unreadable.push((
                        name,
                        Problem {
                            location,
                            field: String::new(),
                            message,
                        },
                    ));
                }
            }
        }
        vars
    }

    fn is_unreadable(&self, name: &str) -> bool {
        self.unreadable.iter().any(|(n, _)| *n == name)
    }
}

impl VarSource for DirVars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if self.is_unreadable(name) {
            return None;
        }
        self.files.get(name).cloned().or_else(|| self.env.get(name))
    }
    fn label(&self, name: &str) -> String {
        if self.files.contains_key(name) || self.is_unreadable(name) {
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
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        let file = path.join(CONFIG_FILE_KEY);
        // Present in any form (even a dangling link or a directory): it is the config, and reading it says
        // what is wrong with it.
        if std::fs::symlink_metadata(&file).is_ok() {
            return load_file(&file, env);
        }
        let origin = path.display().to_string();
        let vars = DirVars::read(path, env);
        return load_vars(&vars, &origin, &vars.unreadable);
    }
    load_file(path, env)
}

fn load_file(path: &Path, env: &dyn VarSource) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    load_toml_str(&text, &path.display().to_string(), env)
}

/// Loads a TOML document; `origin` names it in errors. NAMESPACE, KIP_IMAGE and DEPLOYMENT_NAME from `env`
/// fill the fields the file leaves out. A syntax error is reported alone; otherwise unknown keys, type errors
/// and invalid values are reported together, in file order.
pub fn load_toml_str(text: &str, origin: &str, env: &dyn VarSource) -> Result<Config, ConfigError> {
    let parsed = TomlDoc::parse(text, origin).map_err(|problems| invalid(origin, problems))?;
    let (doc, mut raw, mut located, tainted) = (parsed.doc, parsed.raw, parsed.problems, parsed.tainted);
    let from_env = fill_from_env(&mut raw, env);
    // For the problems' field names; the raw config itself moves into the resolved one.
    let set_names: Vec<String> = raw.sets.iter().map(|s| s.name.clone()).collect();
    let more = match resolve(raw) {
        Ok(config) if located.is_empty() => return Ok(config),
        Ok(_) => Vec::new(),
        Err(more) => more,
    };
    // A field already reported as unknown or of the wrong type was left out: what resolve then says about
    // it (or its absence) is a consequence, not another problem.
    let tainted = Tainted::new(tainted);
    for p in more.into_iter().filter(|p| !tainted.covers(&p.path)) {
        let top = match p.path.first() {
            Some(Seg::Key(k)) => k.as_str(),
            _ => "",
        };
        let (location, offset) = if from_env.contains(&top) {
            (env.label(var_for(&p.path)), 0)
        } else {
            doc.locate(&p.path)
        };
        located.push((
            offset,
            Problem {
                location,
                field: describe(&p.path, &set_names),
                message: p.message,
            },
        ));
    }
    // In the order they appear in the file (stable: problems at one place keep their order).
    located.sort_by_key(|(offset, _)| *offset);
    Err(invalid(origin, located.into_iter().map(|(_, p)| p).collect()))
}

fn invalid(origin: &str, mut problems: Vec<Problem>) -> ConfigError {
    // Values are quoted shortened where the messages are made; this bounds the rest (serde's messages echo
    // whole values).
    for p in &mut problems {
        if let Some(short) = shorten_message(&p.message) {
            p.message = short;
        }
    }
    ConfigError::Invalid {
        origin: origin.to_owned(),
        problems,
    }
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
    load_vars(vars, origin, &[])
}

/// As [`load_from_vars`], with the key files of a ConfigMap directory that could not be read: each is a
/// problem, and its variable is left unset without the follow-on "is not set".
fn load_vars(
    vars: &dyn VarSource,
    origin: &str,
    unreadable: &[(&'static str, Problem)],
) -> Result<Config, ConfigError> {
    let (raw, parse_problems) = raw_from_vars(vars);
    let mut problems: Vec<Problem> = unreadable.iter().map(|(_, p)| p.clone()).collect();
    problems.extend(
        parse_problems
            .into_iter()
            .filter(|p| !unreadable.iter().any(|(_, u)| u.location == p.location)),
    );
    match resolve(raw) {
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
    Err(invalid(origin, problems))
}

/// A variable that failed to parse (or to be read) is left unset: skip the one problem that only says so,
/// "no images" for IMAGES. Problems of the IMAGES entries that did parse are still reported.
fn already_reported(p: &FieldProblem, reported: &[Problem], vars: &dyn VarSource) -> bool {
    let no_images: FieldPath = vec![key("sets"), Seg::Index(0), key("images")];
    let label = vars.label(var_for(&p.path));
    p.path == no_images && reported.iter().any(|r| r.location == label)
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
