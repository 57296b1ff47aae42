//! Where the registry's objects live: a folder on this machine, or a bucket on object
//! storage (S3-compatible; GCS and Azure with the `gcs` / `azure` cargo features).
//!
//! Both give the registry the same operations on keys such as `versions/v3/card.json`:
//! read, create-if-absent (a version is never overwritten), read-modify-write without
//! lost updates (the aliases and the journals), and list.
//!
//! - A **folder** keeps plain std::fs code rather than object_store's LocalFileSystem:
//!   LocalFileSystem has no conditional update (`PutMode::Update`), so alias moves would
//!   need this lock file anyway, and a folder registry stays exactly what it was.
//!   New files are written aside and hard-linked into place (fails if the name exists);
//!   read-modify-write holds an advisory lock (`flock`) on the `.lock` file.
//! - A **bucket** uses conditional puts: `PutMode::Create` (`If-None-Match: *`) for new
//!   objects and `PutMode::Update` (`If-Match: <e-tag>`) for changes; a refused update is
//!   retried from a fresh read, so two writers never lose each other's change.
//!
//! object_store is async, the registry API is synchronous and is called from plain
//! threads (the CLI, the inference workers, the retraining job) and from inside tokio
//! tasks (service start-up, the retrainer's webhook). Bucket calls therefore run on one
//! small process-wide runtime of their own while the caller waits on a channel:
//! `Runtime::block_on` would panic on a caller that is itself a tokio thread, and
//! waiting on a channel there blocks no more than the folder's file reads always did.

use std::fs;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::RegistryError;
use crate::config::registry_url::parse as split_url;

/// How often a bucket update is retried after another writer got in first.
const UPDATE_ATTEMPTS: u32 = 50;

/// The registry's storage.
#[derive(Clone)]
pub(crate) enum Store {
    Folder(PathBuf),
    Bucket {
        store: Arc<dyn ObjectStore>,
        /// The URL it was opened from, for messages.
        url: String,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location())
    }
}

/// Checks a registry URL without connecting: a scheme this build supports, a bucket,
/// a prefix made of valid object names, and a client that builds from the URL and the
/// environment (`AWS_*`). The error says what is wrong.
pub fn check_url(url: &str) -> Result<(), String> {
    split_url(url)?;
    match Store::bucket(url) {
        Ok(_) => Ok(()),
        Err(RegistryError::BadUrl { reason, .. }) => Err(reason),
        Err(e) => Err(e.to_string()),
    }
}

/// One runtime for every bucket call of the process (two threads: calls are small).
static IO: LazyLock<Result<tokio::runtime::Runtime, String>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("triage-registry-io")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
});

fn new_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

impl Store {
    /// A registry in a folder (created on first write).
    pub fn folder(root: PathBuf) -> Self {
        Self::Folder(root)
    }

    /// A registry in a bucket, from `paths.registry_url`. S3 credentials, region and
    /// endpoint come from the standard `AWS_*` environment variables.
    pub fn bucket(url: &str) -> Result<Self, RegistryError> {
        let bad = |reason: String| RegistryError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let (scheme, _bucket, prefix) = split_url(url).map_err(bad)?;
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" | "s3a" => prefixed(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
                prefix,
            ),
            #[cfg(feature = "gcs")]
            "gs" => prefixed(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
                prefix,
            ),
            #[cfg(feature = "azure")]
            "az" | "abfs" | "abfss" => prefixed(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
                prefix,
            ),
            other => return Err(bad(format!("scheme {other:?} is not supported"))),
        };
        Ok(Self::Bucket {
            store,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    /// A bucket in this process's memory: the bucket code path without a server.
    #[cfg(test)]
    pub fn memory() -> Self {
        Self::Bucket {
            store: Arc::new(object_store::memory::InMemory::new()),
            url: "memory://test".into(),
        }
    }

    /// The folder, or the bucket URL.
    pub fn location(&self) -> String {
        match self {
            Self::Folder(root) => root.display().to_string(),
            Self::Bucket { url, .. } => url.clone(),
        }
    }

    /// Where `key` lives, for messages: a path, or a URL.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Self::Folder(root) => root.join(key).display().to_string(),
            Self::Bucket { url, .. } => format!("{url}/{key}"),
        }
    }

    pub fn is_bucket(&self) -> bool {
        matches!(self, Self::Bucket { .. })
    }

    fn io(&self, key: &str) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
        let path = match self {
            Self::Folder(root) => root.join(key),
            Self::Bucket { .. } => PathBuf::from(key),
        };
        move |source| RegistryError::Io { path, source }
    }

    fn store_error(&self, key: &str) -> impl FnOnce(object_store::Error) -> RegistryError {
        let location = self.describe(key);
        move |source| RegistryError::Store {
            location,
            source: Box::new(source),
        }
    }

    /// Runs a bucket call on the registry's runtime and waits for it.
    fn wait<T: Send + 'static>(
        &self,
        key: &str,
        call: impl Future<Output = Result<T, object_store::Error>> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let rt = IO.as_ref().map_err(|e| RegistryError::Runtime(e.clone()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(call.await);
        });
        match rx.recv() {
            Ok(result) => result.map_err(self.store_error(key)),
            Err(_) => Err(RegistryError::Runtime(format!(
                "the call for {} stopped before it answered",
                self.describe(key)
            ))),
        }
    }

    /// The object's bytes; None when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        Ok(self.get_versioned(key)?.map(|(bytes, _)| bytes))
    }

    /// The object's bytes and the version to update it from.
    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, UpdateVersion)>, RegistryError> {
        match self {
            Self::Folder(root) => match fs::read(root.join(key)) {
                Ok(bytes) => Ok(Some((
                    bytes,
                    UpdateVersion {
                        e_tag: None,
                        version: None,
                    },
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.io(key)(e)),
            },
            Self::Bucket { store, .. } => {
                let (store, path) = (store.clone(), ObjectPath::from(key));
                self.wait(key, async move {
                    let got = match store.get_opts(&path, GetOptions::default()).await {
                        Ok(got) => got,
                        Err(object_store::Error::NotFound { .. }) => return Ok(None),
                        Err(e) => return Err(e),
                    };
                    let version = UpdateVersion {
                        e_tag: got.meta.e_tag.clone(),
                        version: got.meta.version.clone(),
                    };
                    let bytes = got.bytes().await?;
                    Ok(Some((bytes.to_vec(), version)))
                })
            }
        }
    }

    /// Writes a new object; `Ok(false)` when `key` already exists (it is left as it was).
    pub fn create(&self, key: &str, bytes: Vec<u8>) -> Result<bool, RegistryError> {
        match self {
            Self::Folder(root) => {
                let path = root.join(key);
                let tmp = self.write_aside(&path, &bytes)?;
                // A hard link fails when the name exists: no overwrite, no half file.
                let linked = fs::hard_link(&tmp, &path);
                let _ = fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(self.io(key)(e)),
                }
            }
            Self::Bucket { store, .. } => {
                let (store, path) = (store.clone(), ObjectPath::from(key));
                self.wait(key, async move {
                    let opts = PutOptions::from(PutMode::Create);
                    match store.put_opts(&path, PutPayload::from(bytes), opts).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                        Err(e) => Err(e),
                    }
                })
            }
        }
    }

    /// Replaces `key` with `change(current)` (current: None when absent) so that no
    /// concurrent change is lost. `change` may run more than once (after another
    /// writer got in first); it returns None to leave the object as it is.
    pub fn update<T>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<&[u8]>) -> Result<(Option<Vec<u8>>, T), RegistryError>,
    ) -> Result<T, RegistryError> {
        match self {
            Self::Folder(root) => {
                fs::create_dir_all(root).map_err(self.io(""))?;
                let _lock = LockFile::acquire(root, LOCK_WAIT)?;
                let current = self.get(key)?;
                let (new, out) = change(current.as_deref())?;
                if let Some(new) = new {
                    let path = root.join(key);
                    let tmp = self.write_aside(&path, &new)?;
                    fs::rename(&tmp, &path).map_err(self.io(key))?;
                }
                Ok(out)
            }
            Self::Bucket { store, .. } => {
                for attempt in 0..UPDATE_ATTEMPTS {
                    let current = self.get_versioned(key)?;
                    let (new, out) = change(current.as_ref().map(|(b, _)| b.as_slice()))?;
                    let Some(new) = new else { return Ok(out) };
                    let mode = match current {
                        Some((_, version)) => PutMode::Update(version),
                        None => PutMode::Create,
                    };
                    let (store, path) = (store.clone(), ObjectPath::from(key));
                    let written = self.wait(key, async move {
                        let opts = PutOptions::from(mode);
                        match store.put_opts(&path, PutPayload::from(new), opts).await {
                            Ok(_) => Ok(true),
                            Err(
                                object_store::Error::Precondition { .. }
                                | object_store::Error::AlreadyExists { .. },
                            ) => Ok(false),
                            Err(e) => Err(e),
                        }
                    })?;
                    if written {
                        return Ok(out);
                    }
                    // Another writer changed it since the read: read again, after a
                    // short pause that differs between writers.
                    let jitter = u64::from(std::process::id() % 7) + u64::from(attempt % 5);
                    std::thread::sleep(Duration::from_millis(5 + 3 * jitter));
                }
                Err(RegistryError::Contended {
                    location: self.describe(key),
                    attempts: UPDATE_ATTEMPTS,
                })
            }
        }
    }

    /// Every key under `prefix` (`versions/`), relative to the registry root.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, RegistryError> {
        match self {
            Self::Folder(root) => {
                let mut keys = Vec::new();
                list_folder(root, prefix.trim_end_matches('/'), &mut keys)
                    .map_err(self.io(prefix))?;
                Ok(keys)
            }
            Self::Bucket { store, .. } => {
                let (store, path) = (store.clone(), ObjectPath::from(prefix));
                self.wait(prefix, async move {
                    let metas: Vec<_> = store.list(Some(&path)).try_collect().await?;
                    Ok(metas.into_iter().map(|m| m.location.to_string()).collect())
                })
            }
        }
    }

    /// Replaces an object unconditionally: only tests damage a registry on purpose.
    #[cfg(test)]
    pub fn overwrite(&self, key: &str, bytes: Vec<u8>) {
        match self {
            Self::Folder(root) => {
                let path = root.join(key);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, bytes).unwrap();
            }
            Self::Bucket { store, .. } => {
                let (store, path) = (store.clone(), ObjectPath::from(key));
                self.wait(key, async move {
                    let opts = PutOptions::default();
                    store.put_opts(&path, bytes.into(), opts).await
                })
                .unwrap();
            }
        }
    }

    /// Writes `bytes` beside `path` under a name of its own, synced.
    fn write_aside(&self, path: &Path, bytes: &[u8]) -> Result<PathBuf, RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let tmp = dir.join(format!(".{name}.{}.tmp", new_name()));
        let written = fs::File::create(&tmp).and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(tmp)
    }
}

fn prefixed<S: ObjectStore>(store: S, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

/// Files under `root/rel`, as `/`-separated keys; names starting with `.` (files being
/// written, the lock) are not keys. A missing folder has none.
fn list_folder(root: &Path, rel: &str, keys: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match fs::read_dir(root.join(rel)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if entry.file_type()?.is_dir() {
            list_folder(root, &key, keys)?;
        } else {
            keys.push(key);
        }
    }
    Ok(())
}

/// How long a folder writer waits for another one to finish its read-modify-write
/// (each holds the lock for one small file write).
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The folder registry's lock file; not a key (names starting with `.` are not listed).
pub(crate) const LOCK: &str = ".lock";

/// The folder's read-modify-write lock: an advisory `flock` on `.lock`. The kernel
/// releases it when its holder exits or dies, so a crashed writer never leaves the
/// registry locked (the lock file from before, which a crash left behind, blocked
/// every writer until someone deleted it). The file itself stays: deleting it would
/// let a new writer lock a fresh file while another still waits on the old one.
/// flock is per open file, so two threads of one process exclude each other too.
struct LockFile(fs::File);

impl LockFile {
    fn acquire(root: &Path, wait: Duration) -> Result<Self, RegistryError> {
        let path = root.join(LOCK);
        let io = |source| RegistryError::Io {
            path: path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let deadline = Instant::now() + wait;
        loop {
            // An advisory flock (std's, since Rust 1.89): the kernel releases it
            // when the holder dies, so nothing is ever stale, even after a restart as PID 1.
            match file.try_lock() {
                Ok(()) => return Ok(Self(file)),
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => return Err(io(e)),
            }
            if Instant::now() > deadline {
                return Err(RegistryError::Locked {
                    path: root.to_path_buf(),
                    lock: path,
                    seconds: wait.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first says so plainly.
        let _ = self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_with_the_reason() {
        assert!(check_url("s3://models/triage/registry").is_ok());
        assert!(check_url("s3://models").is_ok());
        assert!(check_url("s3://models/").is_ok());
        let err = check_url("models/registry").unwrap_err();
        assert!(err.contains("SCHEME://BUCKET/PREFIX"), "{err}");
        let err = check_url("ftp://models/x").unwrap_err();
        assert!(err.contains("\"ftp\" is not supported"), "{err}");
        let err = check_url("file:///srv/registry").unwrap_err();
        assert!(err.contains("paths.registry_dir"), "{err}");
        let err = check_url("s3:///prefix").unwrap_err();
        assert!(err.contains("names no bucket"), "{err}");
        let err = check_url("s3://models/a//b").unwrap_err();
        assert!(err.contains("prefix"), "{err}");
    }

    #[cfg(not(feature = "gcs"))]
    #[test]
    fn a_backend_left_out_of_the_build_names_its_feature() {
        let err = check_url("gs://models/registry").unwrap_err();
        assert!(err.contains("--features gcs"), "{err}");
    }

    fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        vec![
            (Store::folder(dir.path().join("registry")), Some(dir)),
            (Store::memory(), None),
        ]
    }

    #[test]
    fn create_never_overwrites() {
        for (store, _dir) in stores() {
            assert!(
                store
                    .create("versions/v1/card.json", b"one".to_vec())
                    .unwrap()
            );
            assert!(
                !store
                    .create("versions/v1/card.json", b"two".to_vec())
                    .unwrap()
            );
            assert_eq!(
                store.get("versions/v1/card.json").unwrap().as_deref(),
                Some(&b"one"[..]),
                "{store:?}"
            );
            assert_eq!(store.list("versions").unwrap(), ["versions/v1/card.json"]);
            assert_eq!(store.get("versions/v2/card.json").unwrap(), None);
        }
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        for (store, _dir) in stores() {
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..10 {
                            store
                                .update("counter", |current| {
                                    let n: u32 = current
                                        .map(|b| String::from_utf8_lossy(b).parse().unwrap())
                                        .unwrap_or(0);
                                    Ok((Some((n + 1).to_string().into_bytes()), ()))
                                })
                                .unwrap();
                        }
                    });
                }
            });
            assert_eq!(
                store.get("counter").unwrap().as_deref(),
                Some(&b"40"[..]),
                "{store:?}"
            );
        }
    }

    #[test]
    fn a_lock_file_left_behind_does_not_block_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::folder(dir.path().to_path_buf());
        // What a writer of the old lock-file scheme left when it crashed.
        fs::write(dir.path().join(LOCK), b"").unwrap();
        let started = Instant::now();
        store
            .update("aliases.json", |_| Ok((Some(b"{}".to_vec()), ())))
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(dir.path().join(LOCK).exists(), "the lock file stays");
        assert_eq!(store.list("").unwrap(), ["aliases.json"]);
    }

    #[test]
    fn a_held_lock_makes_another_writer_wait_then_names_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = LockFile::acquire(dir.path(), LOCK_WAIT).unwrap();
        let err = LockFile::acquire(dir.path(), Duration::from_millis(100))
            .err()
            .expect("a second holder");
        let text = err.to_string();
        assert!(matches!(err, RegistryError::Locked { .. }), "{err:?}");
        assert!(text.contains(".lock") && text.contains("fuser"), "{text}");
        drop(held);
        LockFile::acquire(dir.path(), Duration::from_millis(100)).unwrap();
    }

    #[test]
    fn a_lock_holder_that_dies_releases_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK);
        // One process holds the lock: the shell locks its descriptor 9 with util-linux
        // flock(1), then becomes `sleep`, which keeps the descriptor.
        if std::process::Command::new("flock")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!("flock(1) is not installed; skipped");
            return;
        }
        let mut holder = std::process::Command::new("sh")
            .args(["-c", r#"exec 9>"$0" && flock 9 && exec sleep 60"#])
            .arg(&lock)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while LockFile::acquire(dir.path(), Duration::ZERO).is_ok() {
            assert!(Instant::now() < deadline, "flock(1) never took the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        holder.kill().unwrap();
        holder.wait().unwrap();
        LockFile::acquire(dir.path(), Duration::from_secs(5)).unwrap();
    }
}
