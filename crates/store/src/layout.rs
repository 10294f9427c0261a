//! Where every file lives under the data directory.
//!
//! ```text
//! archive/readings/date=YYYY-MM-DD/partition=P/<first>-<last>.parquet
//! archive/rolls/partition=P/<first>-<last>.roll    (archive/: or --archive-url)
//! archive/imports/<import id>/date=YYYY-MM-DD/<import id>.parquet, COMPLETE
//! views/<view>/<run id>/part-0.parquet, manifest.json  (views/, baselines/:
//! views/<view>/CURRENT                                or --views-url)
//! views/.lock
//! baselines/<run id>.bin, CURRENT
//! speed/checkpoints/partition=P/<next offset>.ckpt   (.ckpt.refused: set aside)
//! speed/sealed/partition=P.txt                     (speed/: or --checkpoint-url)
//! broker/
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::blobs::{BlobError, Blobs};
use crate::published::Published;

/// The data directory and the paths inside it, and where batch runs
/// publish (the data directory unless [`Layout::publish_in`]).
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
    published: Arc<Published>,
}

impl Layout {
    /// The layout of `root`, publishing under it.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            published: Arc::new(Published::Local(root.clone())),
            root,
        }
    }

    /// Views and baselines published in `store` (a directory or an object
    /// store) instead of the data directory.
    pub fn publish_in(mut self, store: &Blobs) -> Self {
        self.published = Arc::new(Published::new(store));
        self
    }

    pub(crate) fn published(&self) -> &Published {
        &self.published
    }

    /// Where views and baselines are published, for messages.
    pub fn published_location(&self) -> String {
        match self.published.local() {
            Some(dir) => dir.display().to_string(),
            None => self.published.name("").display().to_string(),
        }
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Published batch views, when they are local files; where runs are
    /// staged before they are uploaded, when they are objects.
    pub fn views(&self) -> PathBuf {
        self.published.local().unwrap_or(&self.root).join("views")
    }

    /// The runs of one view (see [`Layout::views`]).
    pub fn view(&self, view: &str) -> PathBuf {
        self.views().join(view)
    }

    /// The file naming the published run of `view` (see [`Layout::views`]).
    pub fn current(&self, view: &str) -> PathBuf {
        self.view(view).join("CURRENT")
    }

    /// One run of one view (see [`Layout::views`]).
    pub fn run(&self, view: &str, run_id: &str) -> PathBuf {
        self.view(view).join(run_id)
    }

    /// The lock a batch run holds (in the data directory: one host runs
    /// the batch runs).
    pub fn batch_lock(&self) -> PathBuf {
        self.root.join("views/.lock")
    }
}

/// The key, in the checkpoint store, of the sealed epoch boundaries of
/// speed partition `p`, one per line.
pub fn sealed_key(p: i32) -> String {
    format!("speed/sealed/partition={p}.txt")
}

/// Reads the sealed boundaries of partition `p` from the checkpoint store:
/// `None` when the speed layer has never held the partition. A store that
/// cannot answer is an error, never "none": a batch run must not take the
/// archive's end for a cut because the registry was out of reach.
pub async fn read_sealed(store: &Blobs, p: i32) -> Result<Option<Vec<i64>>, BlobError> {
    let Some(bytes) = store.get(&sealed_key(p)).await? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    Ok(Some(
        text.lines().filter_map(|l| l.trim().parse().ok()).collect(),
    ))
}

/// Records the sealed boundaries of partition `p` (the newest 10,000),
/// replacing the previous list atomically.
pub async fn write_sealed(store: &Blobs, p: i32, boundaries: &[i64]) -> Result<(), BlobError> {
    let keep = &boundaries[boundaries.len().saturating_sub(10_000)..];
    let text: String = keep.iter().map(|b| format!("{b}\n")).collect();
    store.put(&sealed_key(p), text.into()).await
}

/// Imported history's folder in the archive store, one folder per import.
pub const IMPORTS: &str = "archive/imports";

/// The marker an import writes last.
pub const IMPORT_COMPLETE: &str = "COMPLETE";

/// The imports in the archive store `archive` that are complete (their
/// `COMPLETE` marker written), by id, with the keys of their Parquet files
/// in name order.
pub async fn complete_imports(
    archive: &Blobs,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, BlobError> {
    let mut ids: std::collections::BTreeMap<String, (bool, Vec<String>)> = Default::default();
    let prefix = format!("{IMPORTS}/");
    for key in archive.list(IMPORTS).await? {
        let Some((id, file)) = key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let entry = ids.entry(id.to_string()).or_default();
        if file == IMPORT_COMPLETE {
            entry.0 = true;
        } else if file.ends_with(".parquet") {
            entry.1.push(key.clone());
        }
    }
    Ok(ids
        .into_iter()
        .filter(|(_, (complete, _))| *complete)
        .map(|(id, (_, mut files))| {
            files.sort();
            (id, files)
        })
        .collect())
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never a torn one: a temporary file, synced, renamed, and the
/// directory synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(parent)
}

/// Syncs a directory, so the names in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all())
}
