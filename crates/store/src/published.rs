//! Where batch runs publish (`views/` and `baselines/`): the data
//! directory, another directory, or any object store URL, so that serving
//! replicas and speed workers on other machines read what cron's host
//! published.
//!
//! The views and baselines code is synchronous (serving looks at `CURRENT`
//! per query, batch runs write between their awaits), so an object store
//! is reached through a small runtime of this crate's own ([`block_on`]).
//! The stamp of an object's `CURRENT` is not asked per query: the one last
//! asked is answered at once, and asked again in the background when it is
//! older than [`STAMP_EVERY`], so a query never waits for the store (and
//! while the store does not answer, the last stamp stands).

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::blobs::{BlobError, Blobs};
use crate::layout::write_atomic;
use crate::views::{StoreError, io};

/// How long the stamp of an object is trusted before it is asked again.
pub const STAMP_EVERY: Duration = Duration::from_secs(1);

/// What a published object is now, without reading it: for a file its
/// identity, size and modification time; for an object its entity tag (or
/// size and modification time). A publish replaces the object, so the
/// stamp changes with every publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
    tag: Option<String>,
}

/// The published store.
#[derive(Debug)]
pub(crate) enum Published {
    /// Files under a local directory.
    Local(PathBuf),
    /// Objects, with the stamps last asked per key.
    Remote {
        blobs: Blobs,
        stamps: Arc<Mutex<HashMap<String, Asked>>>,
    },
}

/// The stamp of one object as last asked.
#[derive(Debug)]
pub(crate) struct Asked {
    at: Instant,
    stamp: Option<Stamp>,
    asking: bool,
    failing: bool,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("braid-store")
            .enable_all()
            .build()
            .expect("starting the object store runtime")
    })
}

async fn head(blobs: &Blobs, key: &str) -> Result<Option<Stamp>, BlobError> {
    Ok(blobs.head(key).await?.map(|m| Stamp {
        ino: 0,
        len: m.size,
        modified: Some(m.modified),
        tag: m.tag,
    }))
}

/// Runs `f` to completion on this crate's store runtime, from any thread
/// (also from inside another runtime, whose thread it blocks meanwhile).
pub fn block_on<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("the object store runtime stopped")
}

/// A removal of `path` that found nothing to remove is no error.
fn missing_ok(removed: std::io::Result<()>, path: &Path) -> Result<(), StoreError> {
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

fn blob(e: BlobError) -> StoreError {
    StoreError::Blob(Box::new(e))
}

impl Published {
    pub(crate) fn new(blobs: &Blobs) -> Self {
        match blobs.local_root() {
            Some(root) => Self::Local(root.to_path_buf()),
            None => Self::Remote {
                blobs: blobs.clone(),
                stamps: Arc::new(Mutex::new(HashMap::new())),
            },
        }
    }

    /// The local directory, when the store is one.
    pub(crate) fn local(&self) -> Option<&Path> {
        match self {
            Self::Local(root) => Some(root),
            Self::Remote { .. } => None,
        }
    }

    /// A name for `key` in messages.
    pub(crate) fn name(&self, key: &str) -> PathBuf {
        match self {
            Self::Local(root) => root.join(key),
            Self::Remote { blobs, .. } => PathBuf::from(format!("{}/{key}", blobs.location())),
        }
    }

    /// Reads `key`: `None` when there is none.
    pub(crate) fn read(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::Local(root) => {
                let path = root.join(key);
                match fs::read(&path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io(&path)(e)),
                }
            }
            Self::Remote { blobs, .. } => {
                let (blobs, key) = (blobs.clone(), key.to_string());
                block_on(async move { blobs.get(&key).await })
                    .map(|b| b.map(|b| b.to_vec()))
                    .map_err(blob)
            }
        }
    }

    /// Replaces `key` atomically.
    pub(crate) fn write(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self {
            Self::Local(root) => {
                let path = root.join(key);
                write_atomic(&path, &bytes).map_err(io(&path))
            }
            Self::Remote { blobs, .. } => {
                let (blobs, key) = (blobs.clone(), key.to_string());
                block_on(async move { blobs.put(&key, bytes.into()).await }).map_err(blob)
            }
        }
    }

    /// Every key under `dir`, relative to the store, sorted.
    pub(crate) fn list(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Local(root) => {
                let mut out = Vec::new();
                let path = root.join(dir);
                crate::blobs::walk(&path, dir.trim_matches('/'), &mut out).map_err(io(&path))?;
                out.sort();
                Ok(out)
            }
            Self::Remote { blobs, .. } => {
                let (blobs, dir) = (blobs.clone(), dir.to_string());
                block_on(async move { blobs.list(&dir).await }).map_err(blob)
            }
        }
    }

    /// Removes `key`; a missing one is not an error.
    pub(crate) fn remove(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Local(root) => {
                let path = root.join(key);
                missing_ok(fs::remove_file(&path), &path)
            }
            Self::Remote { blobs, .. } => {
                let (blobs, key) = (blobs.clone(), key.to_string());
                block_on(async move { blobs.delete(&key).await }).map_err(blob)
            }
        }
    }

    /// Removes every key under `dir`.
    pub(crate) fn remove_dir(&self, dir: &str) -> Result<(), StoreError> {
        match self {
            Self::Local(root) => {
                let path = root.join(dir);
                missing_ok(fs::remove_dir_all(&path), &path)
            }
            Self::Remote { blobs, .. } => {
                let (blobs, dir) = (blobs.clone(), dir.to_string());
                block_on(async move {
                    for key in blobs.list(&dir).await? {
                        blobs.delete(&key).await?;
                    }
                    Ok(())
                })
                .map_err(blob)
            }
        }
    }

    /// The stamp of `key` (`None` while there is none); for an object, the
    /// one last asked (see the module's documentation): only the first
    /// call for a key waits for the store.
    pub(crate) fn stamp(&self, key: &str) -> Result<Option<Stamp>, StoreError> {
        match self {
            Self::Local(root) => {
                let path = root.join(key);
                match fs::metadata(&path) {
                    Ok(m) => Ok(Some(Stamp {
                        #[cfg(unix)]
                        ino: std::os::unix::fs::MetadataExt::ino(&m),
                        #[cfg(not(unix))]
                        ino: 0,
                        len: m.len(),
                        modified: m.modified().ok(),
                        tag: None,
                    })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io(&path)(e)),
                }
            }
            Self::Remote { blobs, stamps } => {
                {
                    let mut all = stamps.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(asked) = all.get_mut(key) {
                        if asked.at.elapsed() >= STAMP_EVERY && !asked.asking {
                            asked.asking = true;
                            let (b, k, stamps) = (blobs.clone(), key.to_string(), stamps.clone());
                            runtime().spawn(async move {
                                let got = head(&b, &k).await;
                                let mut all = stamps.lock().unwrap_or_else(|p| p.into_inner());
                                let Some(asked) = all.get_mut(&k) else {
                                    return;
                                };
                                asked.asking = false;
                                match got {
                                    Ok(stamp) => {
                                        if std::mem::take(&mut asked.failing) {
                                            tracing::info!(key = %k, "the store of published runs answers again");
                                        }
                                        asked.at = Instant::now();
                                        asked.stamp = stamp;
                                    }
                                    Err(e) => {
                                        if !std::mem::replace(&mut asked.failing, true) {
                                            tracing::warn!(error = %e, "the store of published runs does not answer: what was read last stands");
                                        }
                                        asked.at = Instant::now();
                                    }
                                }
                            });
                        }
                        return Ok(asked.stamp.clone());
                    }
                }
                let (b, k) = (blobs.clone(), key.to_string());
                let stamp = block_on(async move { head(&b, &k).await }).map_err(blob)?;
                if let Ok(mut all) = stamps.lock() {
                    all.insert(
                        key.to_string(),
                        Asked {
                            at: Instant::now(),
                            stamp: stamp.clone(),
                            asking: false,
                            failing: false,
                        },
                    );
                }
                Ok(stamp)
            }
        }
    }

    /// Forgets the stamp asked of `key`, after writing it.
    pub(crate) fn forget_stamp(&self, key: &str) {
        if let Self::Remote { stamps, .. } = self
            && let Ok(mut s) = stamps.lock()
        {
            s.remove(key);
        }
    }
}
