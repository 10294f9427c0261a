//! Named immutable objects under one root: a local directory, or a prefix
//! of any object store (`s3://bucket/prefix` today).
//!
//! The archive lives here. Its writes are create-only: a local file is
//! staged under `<name>.tmp`, synced, hard-linked into place (which fails
//! on an existing name) and its directory synced; an object store gets a
//! conditional put (`If-None-Match: *` on S3), or, where the store has
//! none, a check that the name is free before the put. Either way a name
//! once written is never overwritten, and a crash leaves a whole object or
//! none.
//!
//! For `s3://` the client reads the usual environment variables:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT` (an S3-compatible server) and
//! `AWS_ALLOW_HTTP=true` (an endpoint without TLS).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

/// A failed blob operation, naming the key and the store.
#[derive(Debug, thiserror::Error)]
#[error("{op} {key} in {store}: {source}")]
pub struct BlobError {
    /// What was being done.
    pub op: &'static str,
    /// The key (or URL) it was done to.
    pub key: String,
    /// The store.
    pub store: String,
    /// Why it failed.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What a create-only put found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// The object is new.
    Created,
    /// An object of that name was there already and is left as it was.
    Existed,
}

/// What [`Blobs::head`] tells of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: std::time::SystemTime,
    /// The store's entity tag, where it gives one.
    pub tag: Option<String>,
}

/// Objects under one root. Cheap to clone.
#[derive(Clone)]
pub struct Blobs {
    inner: Arc<Inner>,
}

enum Inner {
    Local(PathBuf),
    Remote {
        store: Arc<dyn ObjectStore>,
        prefix: ObjPath,
        url: String,
    },
}

impl fmt::Debug for Blobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blobs({})", self.location())
    }
}

impl Blobs {
    /// Objects as files under the local directory `root`.
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner::Local(root.into())),
        }
    }

    /// Opens `url`: `s3://bucket[/prefix]`, `file:///dir`, or a plain path.
    pub fn open(url: &str) -> Result<Self, BlobError> {
        Self::open_with(url, &[])
    }

    /// Opens `url` with store options (for S3 the `aws_*` keys, e.g.
    /// `aws_endpoint`) set over the environment's.
    pub fn open_with(url: &str, options: &[(String, String)]) -> Result<Self, BlobError> {
        let bad = |why: String| BlobError {
            op: "opening",
            key: url.to_string(),
            store: url.to_string(),
            source: why.into(),
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(Self::local(url));
        };
        match scheme {
            "file" => Ok(Self::local(rest)),
            "s3" | "s3a" => {
                let prefix = rest.split_once('/').map_or("", |(_, p)| p);
                let retry = object_store::RetryConfig {
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(20),
                    ..Default::default()
                };
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry);
                for (k, v) in options {
                    let key = k
                        .parse()
                        .map_err(|e: object_store::Error| bad(e.to_string()))?;
                    builder = builder.with_config(key, v);
                }
                let store = builder.build().map_err(|e| bad(e.to_string()))?;
                Ok(Self {
                    inner: Arc::new(Inner::Remote {
                        store: Arc::new(store),
                        prefix: ObjPath::from(prefix.trim_matches('/')),
                        url: url.trim_end_matches('/').to_string(),
                    }),
                })
            }
            other => Err(bad(format!(
                "unsupported scheme `{other}://` (use s3://bucket/prefix, file:///dir or a path)"
            ))),
        }
    }

    /// Where the objects are, for messages.
    pub fn location(&self) -> String {
        match &*self.inner {
            Inner::Local(root) => root.display().to_string(),
            Inner::Remote { url, .. } => url.clone(),
        }
    }

    /// The local directory, when the objects are local files.
    pub fn local_root(&self) -> Option<&Path> {
        match &*self.inner {
            Inner::Local(root) => Some(root),
            Inner::Remote { .. } => None,
        }
    }

    fn err(
        &self,
        op: &'static str,
        key: &str,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> BlobError {
        BlobError {
            op,
            key: key.to_string(),
            store: self.location(),
            source: e.into(),
        }
    }

    fn object(prefix: &ObjPath, key: &str) -> ObjPath {
        key.split('/')
            .filter(|s| !s.is_empty())
            .fold(prefix.clone(), |p, s| p.join(s))
    }

    /// Writes `bytes` as `key` unless `key` exists (then nothing changes).
    pub async fn put_create(&self, key: &str, bytes: Bytes) -> Result<Put, BlobError> {
        match &*self.inner {
            Inner::Local(root) => {
                let path = root.join(key);
                tokio::task::spawn_blocking(move || put_file(&path, &bytes))
                    .await
                    .map_err(|e| self.err("writing", key, e))?
                    .map_err(|e| self.err("writing", key, e))
            }
            Inner::Remote { store, prefix, .. } => {
                let loc = Self::object(prefix, key);
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                match store
                    .put_opts(&loc, PutPayload::from(bytes.clone()), opts)
                    .await
                {
                    Ok(_) => Ok(Put::Created),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Existed),
                    Err(object_store::Error::NotImplemented { .. }) => {
                        // No conditional put: check, then put. Only one
                        // writer owns a name at a time, so this is enough.
                        match store.head(&loc).await {
                            Ok(_) => Ok(Put::Existed),
                            Err(object_store::Error::NotFound { .. }) => {
                                store
                                    .put(&loc, PutPayload::from(bytes))
                                    .await
                                    .map_err(|e| self.err("writing", key, e))?;
                                Ok(Put::Created)
                            }
                            Err(e) => Err(self.err("checking", key, e)),
                        }
                    }
                    Err(e) => Err(self.err("writing", key, e)),
                }
            }
        }
    }

    /// Writes `bytes` as `key`, replacing what was there: readers see the
    /// old object or the new one, never a torn one (a local file is
    /// written to a temporary name, synced and renamed; an object store's
    /// put is atomic).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        match &*self.inner {
            Inner::Local(root) => {
                let path = root.join(key);
                tokio::task::spawn_blocking(move || crate::layout::write_atomic(&path, &bytes))
                    .await
                    .map_err(|e| self.err("writing", key, e))?
                    .map_err(|e| self.err("writing", key, e))
            }
            Inner::Remote { store, prefix, .. } => store
                .put(&Self::object(prefix, key), PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| self.err("writing", key, e)),
        }
    }

    /// Moves `from` to `to` (replacing `to`).
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), BlobError> {
        match &*self.inner {
            Inner::Local(root) => {
                let (src, dst) = (root.join(from), root.join(to));
                tokio::task::spawn_blocking(move || {
                    std::fs::rename(&src, &dst)?;
                    crate::layout::sync_dir(dst.parent().unwrap_or(Path::new(".")))
                })
                .await
                .map_err(|e| self.err("renaming", from, e))?
                .map_err(|e| self.err("renaming", from, e))
            }
            Inner::Remote { store, prefix, .. } => store
                .rename(&Self::object(prefix, from), &Self::object(prefix, to))
                .await
                .map_err(|e| self.err("renaming", from, e)),
        }
    }

    /// Reads `key`: `None` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, BlobError> {
        match &*self.inner {
            Inner::Local(root) => {
                let path = root.join(key);
                let read = tokio::task::spawn_blocking(move || std::fs::read(path))
                    .await
                    .map_err(|e| self.err("reading", key, e))?;
                match read {
                    Ok(b) => Ok(Some(Bytes::from(b))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(self.err("reading", key, e)),
                }
            }
            Inner::Remote { store, prefix, .. } => {
                let loc = Self::object(prefix, key);
                match store.get(&loc).await {
                    Ok(r) => Ok(Some(
                        r.bytes().await.map_err(|e| self.err("reading", key, e))?,
                    )),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(self.err("reading", key, e)),
                }
            }
        }
    }

    /// What is known of `key` without reading it: `None` when there is no
    /// such object.
    pub async fn head(&self, key: &str) -> Result<Option<Meta>, BlobError> {
        match &*self.inner {
            Inner::Local(root) => {
                let path = root.join(key);
                let m = tokio::task::spawn_blocking(move || std::fs::metadata(path))
                    .await
                    .map_err(|e| self.err("checking", key, e))?;
                match m {
                    Ok(m) => Ok(Some(Meta {
                        size: m.len(),
                        modified: m.modified().map_err(|e| self.err("checking", key, e))?,
                        tag: None,
                    })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(self.err("checking", key, e)),
                }
            }
            Inner::Remote { store, prefix, .. } => {
                match store.head(&Self::object(prefix, key)).await {
                    Ok(m) => Ok(Some(Meta {
                        size: m.size,
                        modified: m.last_modified.into(),
                        tag: m.e_tag,
                    })),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(self.err("checking", key, e)),
                }
            }
        }
    }

    /// Every key under the folder `dir` (at any depth), sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, BlobError> {
        let mut keys = match &*self.inner {
            Inner::Local(root) => {
                let (root, dir_owned) = (root.clone(), dir.to_string());
                tokio::task::spawn_blocking(move || {
                    let mut out = Vec::new();
                    walk(
                        &root.join(&dir_owned),
                        dir_owned.trim_matches('/'),
                        &mut out,
                    )?;
                    Ok::<_, std::io::Error>(out)
                })
                .await
                .map_err(|e| self.err("listing", dir, e))?
                .map_err(|e| self.err("listing", dir, e))?
            }
            Inner::Remote { store, prefix, .. } => {
                let base = Self::object(prefix, dir);
                let metas: Vec<_> = store
                    .list(Some(&base))
                    .try_collect()
                    .await
                    .map_err(|e| self.err("listing", dir, e))?;
                let strip = prefix.as_ref();
                metas
                    .into_iter()
                    .map(|m| {
                        let full = m.location.as_ref();
                        full.strip_prefix(strip)
                            .unwrap_or(full)
                            .trim_start_matches('/')
                            .to_string()
                    })
                    .collect()
            }
        };
        keys.sort();
        Ok(keys)
    }

    /// Removes `key`; a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match &*self.inner {
            Inner::Local(root) => {
                let path = root.join(key);
                match tokio::task::spawn_blocking(move || std::fs::remove_file(path))
                    .await
                    .map_err(|e| self.err("removing", key, e))?
                {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(self.err("removing", key, e)),
                }
            }
            Inner::Remote { store, prefix, .. } => {
                match store.delete(&Self::object(prefix, key)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(self.err("removing", key, e)),
                }
            }
        }
    }
}

/// The pause before the next try at a store that fails: 1 s after the
/// first failure, doubling, at most 10 s. The archiver and the speed
/// layer's checkpoints hold (advance no offset) while they wait.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backoff {
    pause: Duration,
}

impl Backoff {
    /// The first pause.
    pub const FIRST: Duration = Duration::from_secs(1);
    /// The longest pause.
    pub const MAX: Duration = Duration::from_secs(10);

    /// A try failed: how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MAX);
        self.pause
    }

    /// A try worked: whether tries had failed before (the store is back).
    pub fn worked(&mut self) -> bool {
        !std::mem::take(&mut self.pause).is_zero()
    }
}

/// The staging name a local put writes before linking it into place.
pub const STAGING: &str = ".tmp";

/// Writes `bytes` to the local file `path` create-only: staged under
/// `<path>.tmp`, synced, hard-linked into place, the directory synced.
pub fn put_file(path: &Path, bytes: &[u8]) -> std::io::Result<Put> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(STAGING);
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    // A hard link fails on an existing name: create-only.
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    match linked {
        Ok(()) => {
            crate::layout::sync_dir(parent)?;
            Ok(Put::Created)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Put::Existed),
        Err(e) => Err(e),
    }
}

pub(crate) fn walk(dir: &Path, key: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let child = if key.is_empty() {
            name
        } else {
            format!("{key}/{name}")
        };
        if e.file_type()?.is_dir() {
            walk(&e.path(), &child, out)?;
        } else {
            out.push(child);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_put_is_create_only_and_lists_by_folder() {
        let dir = tempfile::tempdir().unwrap();
        let b = Blobs::local(dir.path());
        let put = b.put_create("a/b/one.bin", Bytes::from_static(b"1")).await;
        assert_eq!(put.unwrap(), Put::Created);
        let again = b.put_create("a/b/one.bin", Bytes::from_static(b"2")).await;
        assert_eq!(again.unwrap(), Put::Existed);
        assert_eq!(b.get("a/b/one.bin").await.unwrap().unwrap(), "1");
        b.put_create("a/two.bin", Bytes::from_static(b"2"))
            .await
            .unwrap();
        assert_eq!(b.list("a").await.unwrap(), ["a/b/one.bin", "a/two.bin"]);
        assert_eq!(b.list("a/b/").await.unwrap(), ["a/b/one.bin"]);
        assert!(b.list("none").await.unwrap().is_empty());
        b.delete("a/two.bin").await.unwrap();
        b.delete("a/two.bin").await.unwrap();
        assert_eq!(b.get("a/two.bin").await.unwrap(), None);
        // A plain put replaces; a rename moves.
        b.put("a/b/one.bin", Bytes::from_static(b"3"))
            .await
            .unwrap();
        assert_eq!(b.get("a/b/one.bin").await.unwrap().unwrap(), "3");
        b.rename("a/b/one.bin", "a/b/one.old").await.unwrap();
        assert_eq!(b.list("a").await.unwrap(), ["a/b/one.old"]);
    }

    #[test]
    fn backoff_doubles_to_its_limit_and_resets() {
        let mut b = Backoff::default();
        assert!(!b.worked());
        let pauses: Vec<u64> = (0..6).map(|_| b.failed().as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 10, 10]);
        assert!(b.worked());
        assert_eq!(b.failed(), Backoff::FIRST);
    }

    #[test]
    fn urls_open_as_local_or_remote_and_unknown_schemes_are_refused() {
        assert_eq!(
            Blobs::open("file:///x/y").unwrap().local_root(),
            Some(Path::new("/x/y"))
        );
        assert_eq!(
            Blobs::open("rel/dir").unwrap().local_root(),
            Some(Path::new("rel/dir"))
        );
        let s3 = Blobs::open("s3://bucket/some/prefix/").unwrap();
        assert_eq!(s3.location(), "s3://bucket/some/prefix");
        let err = Blobs::open("gs://bucket").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme `gs://`"), "{err}");
    }
}
