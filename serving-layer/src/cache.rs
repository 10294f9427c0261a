//! Merged answers kept while nothing they were made from has changed.
//!
//! An answer is a function of the query, the batch run it was merged with
//! and the speed table. The table counts its changes
//! ([`SpeedTable::version`](braid_core::speedlog::SpeedTable::version): every
//! message read, every state dropped under a new cut), so an entry made at
//! one version from one run is exact for as long as the table is at that
//! version and the run is the one the cache holds. Nothing expires by time:
//! an entry is used only when both still match, and replaced otherwise.
//!
//! Only the JSON rows are kept, the part of an answer that costs. The
//! freshness in the header is computed for each request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::api::SpeedPosition;
use crate::batch::ServedRun;
use crate::query::{Query, SourceFilter};

/// What an answer was asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    view: String,
    from: Option<i64>,
    to: Option<i64>,
    device: Option<String>,
    metric: Option<String>,
    final_only: bool,
    source: SourceFilter,
}

impl AnswerKey {
    /// The key of `query` on `view`.
    pub fn of(view: &str, query: &Query) -> Self {
        Self {
            view: view.to_string(),
            from: query.from,
            to: query.to,
            device: query.device.clone(),
            metric: query.metric.clone(),
            final_only: query.final_only,
            source: query.source,
        }
    }
}

/// One kept answer.
#[derive(Debug)]
pub struct Answer {
    /// The speed table's version it was made at.
    pub version: u64,
    /// The batch run it was merged with, weakly: a kept answer does not
    /// keep a replaced run's windows in memory. A `Weak` keeps the run's
    /// allocation, so no later run can have its address.
    pub run: Option<Weak<ServedRun>>,
    /// The answer's `batch` header: that run's id, time and cut.
    pub batch: serde_json::Value,
    /// The rows as a JSON array.
    pub rows: Vec<u8>,
    /// The view's watermark.
    pub watermark: Option<i64>,
    /// The speed position it was made from.
    pub position: SpeedPosition,
}

impl Answer {
    /// Whether the answer was made from `version` and `run`.
    fn made_from(&self, version: u64, run: Option<&Arc<ServedRun>>) -> bool {
        self.version == version
            && match (&self.run, run) {
                (Some(a), Some(b)) => std::ptr::eq(a.as_ptr(), Arc::as_ptr(b)),
                (None, None) => true,
                _ => false,
            }
    }
}

/// The kept answers, at most `limit` bytes of rows in all.
#[derive(Debug)]
pub struct AnswerCache {
    entries: Mutex<(HashMap<AnswerKey, Arc<Answer>>, usize)>,
    limit: usize,
    /// Answers taken from the cache.
    pub hits: AtomicU64,
    /// Answers made because none was kept (or the kept one was outdated).
    pub misses: AtomicU64,
}

impl AnswerCache {
    /// A cache of at most `limit` bytes of rows (0: keep nothing).
    pub fn new(limit: usize) -> Self {
        Self {
            entries: Mutex::new((HashMap::new(), 0)),
            limit,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The answer to `key` made at `version` from `run`, if one is kept.
    pub fn get(
        &self,
        key: &AnswerKey,
        version: u64,
        run: Option<&Arc<ServedRun>>,
    ) -> Option<Arc<Answer>> {
        let hit = self
            .entries
            .lock()
            .ok()?
            .0
            .get(key)
            .filter(|a| a.made_from(version, run))
            .cloned();
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Whether rows of `size` bytes would be kept: an answer larger than
    /// an eighth of the limit is not (so nothing is, at limit 0).
    pub fn takes(&self, size: usize) -> bool {
        size <= self.limit / 8 && self.limit > 0
    }

    /// Keeps `answer` for `key`, in place of an older one, if it
    /// [`takes`](Self::takes) its size; when the limit is reached,
    /// everything kept is let go.
    pub fn put(&self, key: AnswerKey, answer: Arc<Answer>) {
        let size = answer.rows.len();
        if !self.takes(size) {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let (map, bytes) = &mut *entries;
        if *bytes + size > self.limit {
            map.clear();
            *bytes = 0;
        }
        if let Some(old) = map.insert(key, answer) {
            *bytes -= old.rows.len();
        }
        *bytes += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(version: u64, size: usize) -> Arc<Answer> {
        Arc::new(Answer {
            version,
            run: None,
            batch: serde_json::Value::Null,
            rows: vec![b' '; size],
            watermark: None,
            position: SpeedPosition::default(),
        })
    }

    fn key(device: &str) -> AnswerKey {
        AnswerKey::of(
            "v",
            &Query {
                device: Some(device.into()),
                ..Query::default()
            },
        )
    }

    #[test]
    fn an_answer_is_used_only_at_its_version_and_run() {
        let cache = AnswerCache::new(1000);
        cache.put(key("a"), answer(7, 10));
        assert!(cache.get(&key("a"), 7, None).is_some());
        assert!(cache.get(&key("a"), 8, None).is_none(), "the table moved");
        assert!(cache.get(&key("b"), 7, None).is_none(), "another query");
        let run = Arc::new(ServedRun::new(
            braid_store::views::BatchView {
                manifest: braid_store::views::Manifest {
                    format: 1,
                    view: "v".into(),
                    run_id: "r".into(),
                    started_ms: 0,
                    finished_ms: 0,
                    definition_hash: String::new(),
                    cut: Default::default(),
                    archive_files: Vec::new(),
                    imports: Vec::new(),
                    records_read: 0,
                    rows: 0,
                    readings: 0,
                    duplicates_dropped: 0,
                    incremental: false,
                    previous_run: None,
                },
                windows: Default::default(),
            },
            &[],
        ));
        assert!(
            cache.get(&key("a"), 7, Some(&run)).is_none(),
            "a batch run was published"
        );
        let with_run = Answer {
            version: 7,
            run: Some(Arc::downgrade(&run)),
            batch: serde_json::Value::Null,
            rows: b"[]".to_vec(),
            watermark: None,
            position: SpeedPosition::default(),
        };
        cache.put(key("a"), Arc::new(with_run));
        assert!(cache.get(&key("a"), 7, Some(&run)).is_some());
        assert!(cache.get(&key("a"), 7, None).is_none(), "the run withdrawn");
        let other = Arc::new(ServedRun::new(
            braid_store::views::BatchView {
                manifest: run.manifest.clone(),
                windows: Default::default(),
            },
            &[],
        ));
        assert!(
            cache.get(&key("a"), 7, Some(&other)).is_none(),
            "another run, even of the same id"
        );
        assert_eq!(cache.hits.load(Ordering::Relaxed), 2);
        assert_eq!(cache.misses.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn the_limit_holds() {
        let cache = AnswerCache::new(100);
        cache.put(key("big"), answer(1, 13));
        assert!(cache.get(&key("big"), 1, None).is_none(), "over an eighth");
        for (i, d) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .enumerate()
        {
            cache.put(key(d), answer(i as u64, 12));
        }
        let bytes = cache.entries.lock().map(|e| e.1).unwrap_or(0);
        assert!(bytes <= 100, "{bytes} bytes kept");
        assert!(
            cache.get(&key("i"), 8, None).is_some(),
            "the newest is kept"
        );
    }
}
