//! The config-file watch: turns any change in the config's directory into one "maybe changed" signal.
//!
//! The file's directory is watched (non-recursive) with `notify`, which sees both an editor's save and the
//! kubelet's update of a mounted ConfigMap (a new `..data` symlink swapped into the directory). Events are
//! coalesced into one signal; the controller re-reads and compares.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path} for config changes: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// A live watch; dropping it stops watching.
pub struct ConfigWatch {
    _watcher: RecommendedWatcher,
    pub changes: mpsc::Receiver<()>,
}

/// The directory to watch for a config path: the path itself for a mounted ConfigMap directory, else the
/// file's parent (a rename or symlink swap replaces the file, so watching the file alone would go stale).
pub fn watch_target(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub fn watch(path: &Path) -> Result<ConfigWatch, WatchError> {
    let target = watch_target(path);
    // Capacity 1: any number of file events collapse into one pending "re-read" signal.
    let (tx, changes) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(e) => !matches!(e.kind, notify::EventKind::Access(_)),
            Err(_) => true, // a watch error: re-read to be safe
        };
        if relevant {
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| WatchError::Watch {
        path: target.clone(),
        source,
    })?;
    watcher
        .watch(&target, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Watch {
            path: target.clone(),
            source,
        })?;
    Ok(ConfigWatch {
        _watcher: watcher,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn targets() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(watch_target(dir.path()), dir.path());
        assert_eq!(watch_target(&dir.path().join("config.toml")), dir.path());
        assert_eq!(watch_target(Path::new("config.toml")), PathBuf::from("."));
    }

    /// The kubelet's update of a mounted ConfigMap: `config.toml -> ..data/config.toml`, and `..data` is
    /// replaced by renaming a new symlink over it.
    #[tokio::test]
    async fn sees_configmap_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/config.toml"), "a").unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.toml", d.join("config.toml")).unwrap();
        let mut w = watch(&d.join("config.toml")).unwrap();

        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/config.toml"), "b").unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();

        let got = tokio::time::timeout(Duration::from_secs(5), w.changes.recv()).await;
        assert_eq!(got, Ok(Some(())), "no change signal after the ..data swap");
        assert_eq!(std::fs::read_to_string(d.join("config.toml")).unwrap(), "b");
    }
}
