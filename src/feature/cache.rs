//! Feature cache: embeddings of a training file, stored once and reused when the
//! same file is trained on again with the same reader settings, embedding model
//! and max length.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;
use sha2::{Digest, Sha256};

use crate::checksum::hex;
use crate::embed::EmbeddingSpec;

const MAGIC: &[u8; 8] = b"TRIAGEF1";

/// A folder of `<key>.f32` files: magic, rows (u64 LE), dimension (u64 LE), f32 LE data.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
}

impl FeatureCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache key: what decides the rows and their vectors.
    pub fn key(data_sha256: &str, reader_fingerprint: &str, spec: &EmbeddingSpec) -> String {
        let mut h = Sha256::new();
        for part in [
            data_sha256,
            reader_fingerprint,
            &spec.model_id,
            &spec.model_sha256,
            &spec.max_length.to_string(),
            &spec.pooling,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        if spec.truncation != crate::config::Truncation::Head {
            h.update(format!("{:?}", spec.truncation).as_bytes());
        }
        hex(&h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.f32"))
    }

    /// The cached matrix, if present and of the expected shape. A damaged entry is
    /// treated as absent (and will be overwritten).
    pub fn load(&self, key: &str, rows: usize, dim: usize) -> Option<Array2<f32>> {
        let bytes = fs::read(self.path(key)).ok()?;
        let header = MAGIC.len() + 16;
        if bytes.len() != header + rows * dim * 4 || &bytes[..MAGIC.len()] != MAGIC {
            return None;
        }
        let read_u64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().ok()?).into();
        let (r, d): (Option<u64>, Option<u64>) = (read_u64(8), read_u64(16));
        if r? != rows as u64 || d? != dim as u64 {
            return None;
        }
        let data: Vec<f32> = bytes[header..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Array2::from_shape_vec((rows, dim), data).ok()
    }

    /// Stores a matrix atomically (temporary file, then rename).
    pub fn store(&self, key: &str, features: &Array2<f32>) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        {
            let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
            out.write_all(MAGIC)?;
            out.write_all(&(features.nrows() as u64).to_le_bytes())?;
            out.write_all(&(features.ncols() as u64).to_le_bytes())?;
            for v in features.iter() {
                out.write_all(&v.to_le_bytes())?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        fs::rename(&tmp, self.path(key))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_length: usize) -> EmbeddingSpec {
        EmbeddingSpec {
            model_id: "m".into(),
            model_sha256: "abc".into(),
            max_length,
            truncation: crate::config::Truncation::Head,
            dimension: 3,
            pooling: "mean".into(),
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(dir.path());
        let m = Array2::from_shape_fn((4, 3), |(i, j)| i as f32 * 0.1 - j as f32 / 3.0);
        cache.store("k", &m).unwrap();
        assert_eq!(cache.load("k", 4, 3), Some(m));
    }

    #[test]
    fn wrong_shape_or_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(dir.path());
        cache.store("k", &Array2::zeros((2, 3))).unwrap();
        assert_eq!(cache.load("k", 3, 3), None);
        std::fs::write(dir.path().join("k.f32"), b"garbage").unwrap();
        assert_eq!(cache.load("k", 2, 3), None);
        assert_eq!(cache.load("absent", 2, 3), None);
    }

    #[test]
    fn key_changes_with_file_reader_and_max_length() {
        let base = FeatureCache::key("sha", "reader", &spec(256));
        assert_eq!(base, FeatureCache::key("sha", "reader", &spec(256)));
        assert_ne!(base, FeatureCache::key("sha2", "reader", &spec(256)));
        assert_ne!(base, FeatureCache::key("sha", "reader2", &spec(256)));
        assert_ne!(base, FeatureCache::key("sha", "reader", &spec(128)));
    }
}
