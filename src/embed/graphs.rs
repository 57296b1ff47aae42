//! Where the embedding graphs are, by checksum: a model card names its graph by the
//! sha256 of the ONNX file, and a service or command configured for another graph
//! (say the int8 default, serving a champion trained on the fp32 graph) finds the
//! right one among the configured folder and the model cache's folders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::EmbedError;
use crate::checksum::hex;
use crate::config::Settings;

/// A file's size and modification time: when either changes, it is hashed again.
type Stamp = (u64, Option<SystemTime>);

/// Folders that may hold a graph, and the checksums of those already read.
#[derive(Debug, Default)]
pub struct GraphCatalog {
    dirs: Vec<PathBuf>,
    /// Per `model.onnx`: its stamp when hashed, and the sum.
    sums: Mutex<HashMap<PathBuf, (Stamp, String)>>,
}

impl GraphCatalog {
    /// The configured `embedding.model_dir` first, then every folder under
    /// `<cache>/models` that holds a `model.onnx`, in name order.
    pub fn for_settings(settings: &Settings) -> Self {
        let mut dirs = vec![settings.model_dir()];
        if let Ok(entries) = std::fs::read_dir(settings.cache_dir().join("models")) {
            let mut cached: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|d| d.join("model.onnx").is_file() && !dirs.contains(d))
                .collect();
            cached.sort();
            dirs.extend(cached);
        }
        Self::new(dirs)
    }

    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            sums: Mutex::default(),
        }
    }

    /// Records a graph file's checksum already computed (by the loader).
    pub fn remember(&self, dir: &Path, sha256: &str) {
        let path = dir.join("model.onnx");
        if let Some(stamp) = stamp(&path) {
            self.sums
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path, (stamp, sha256.to_string()));
        }
    }

    /// The first folder whose `model.onnx` has checksum `sha256`.
    pub fn find(&self, sha256: &str) -> Result<PathBuf, EmbedError> {
        for dir in &self.dirs {
            if self.checksum(dir).as_deref() == Some(sha256) {
                return Ok(dir.clone());
            }
        }
        Err(EmbedError::GraphNotFound {
            sha256: sha256.to_string(),
            searched: self.searched(),
        })
    }

    fn searched(&self) -> String {
        if self.dirs.is_empty() {
            return "no folder".into();
        }
        self.dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The folder's graph checksum, hashed once per file version (23 MB: ~50 ms).
    fn checksum(&self, dir: &Path) -> Option<String> {
        let path = dir.join("model.onnx");
        let now = stamp(&path)?;
        let mut sums = self.sums.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((then, sum)) = sums.get(&path)
            && *then == now
        {
            return Some(sum.clone());
        }
        let sum = hex(&Sha256::digest(std::fs::read(&path).ok()?));
        sums.insert(path, (now, sum.clone()));
        Some(sum)
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| (meta.len(), meta.modified().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_graph_by_checksum_and_names_every_folder_when_none_matches() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        for (dir, bytes) in [(&a, b"graph a"), (&b, b"graph b")] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("model.onnx"), bytes).unwrap();
        }
        let catalog = GraphCatalog::new(vec![root.path().join("missing"), a.clone(), b.clone()]);
        let sum_b = hex(&Sha256::digest(b"graph b"));
        assert_eq!(catalog.find(&sum_b).unwrap(), b);

        // A file replaced in place is hashed again.
        std::fs::write(b.join("model.onnx"), b"graph b, version 2").unwrap();
        let err = catalog.find(&sum_b).unwrap_err().to_string();
        assert!(
            err.contains(&sum_b[..12]) && err.contains("make setup"),
            "{err}"
        );
        for dir in ["missing", "a", "b"] {
            assert!(
                err.contains(&root.path().join(dir).display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn the_configured_folder_comes_first_then_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        for name in ["z-int8", "a-fp32", "empty"] {
            std::fs::create_dir_all(cache.path().join("models").join(name)).unwrap();
        }
        for name in ["z-int8", "a-fp32"] {
            std::fs::write(
                cache.path().join("models").join(name).join("model.onnx"),
                name,
            )
            .unwrap();
        }
        let mut settings = Settings::default();
        settings.paths.cache_dir = cache.path().to_path_buf();
        settings.embedding.model_dir = cache.path().join("models/z-int8");
        let catalog = GraphCatalog::for_settings(&settings);
        let models = cache.path().join("models");
        assert_eq!(catalog.dirs, [models.join("z-int8"), models.join("a-fp32")]);
    }
}
