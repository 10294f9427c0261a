//! Seasonal baselines a batch run trained: `baselines/<run id>.bin` (the
//! core's checksummed encoding) and `baselines/CURRENT`. The batch layer
//! writes them; the speed layer's detectors and the serving layer's
//! forecasts read them, and pick up a new run by watching `CURRENT`.

use std::path::PathBuf;

use braid_core::baseline::Baselines;

use crate::Layout;
use crate::views::{StoreError, format_err, io};

const CURRENT: &str = "baselines/CURRENT";

fn key(run_id: &str) -> String {
    format!("baselines/{run_id}.bin")
}

impl Layout {
    /// Trained seasonal baselines, one file per batch run, when they are
    /// local files (see [`Layout::views`]).
    pub fn baselines(&self) -> PathBuf {
        self.published()
            .local()
            .unwrap_or(self.root())
            .join("baselines")
    }
}

/// Writes `b` as its run's file and makes it current; keeps the newest
/// `keep` files. Returns where it is.
pub fn publish(layout: &Layout, b: &Baselines, keep: usize) -> Result<PathBuf, StoreError> {
    let published = layout.published();
    published.write(&key(&b.run_id), b.encode())?;
    published.write(CURRENT, format!("{}\n", b.run_id).into_bytes())?;
    published.forget_stamp(CURRENT);
    let runs: Vec<String> = published
        .list("baselines/")?
        .into_iter()
        .filter_map(|k| {
            k.strip_prefix("baselines/")?
                .strip_suffix(".bin")
                .map(str::to_string)
        })
        .collect();
    let n = runs.len();
    for old in runs
        .into_iter()
        .take(n.saturating_sub(keep.max(1)))
        .filter(|r| *r != b.run_id)
    {
        published.remove(&key(&old))?;
    }
    Ok(published.name(&key(&b.run_id)))
}

/// What `baselines/CURRENT` is now, without reading it (see
/// [`crate::views::current_stamp`]).
pub fn current_stamp(layout: &Layout) -> Result<Option<crate::published::Stamp>, StoreError> {
    layout.published().stamp(CURRENT)
}

/// The run id of the current baselines, if any.
pub fn current_id(layout: &Layout) -> Result<Option<String>, StoreError> {
    let Some(bytes) = layout.published().read(CURRENT)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    Ok(Some(text.trim().to_string()).filter(|s| !s.is_empty()))
}

/// Reads the baselines of `run_id`.
pub fn read(layout: &Layout, run_id: &str) -> Result<Baselines, StoreError> {
    let published = layout.published();
    let path = published.name(&key(run_id));
    let bytes = published.read(&key(run_id))?.ok_or_else(|| {
        io(&path)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such baselines",
        ))
    })?;
    Baselines::decode(&bytes).map_err(|e| format_err(&path, e))
}

/// The current baselines, if any.
pub fn read_current(layout: &Layout) -> Result<Option<Baselines>, StoreError> {
    current_id(layout)?.map(|id| read(layout, &id)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn published_baselines_are_current_and_old_ones_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        assert_eq!(read_current(&layout).unwrap(), None);
        for id in ["r1", "r2", "r3"] {
            let b = Baselines {
                run_id: id.into(),
                ..Baselines::default()
            };
            publish(&layout, &b, 2).unwrap();
            assert_eq!(read_current(&layout).unwrap(), Some(b));
        }
        assert!(!layout.baselines().join("r1.bin").exists());
        assert!(layout.baselines().join("r2.bin").exists());
        fs::write(layout.baselines().join("r3.bin"), b"BRAIDBL1 broken").unwrap();
        let e = read_current(&layout).unwrap_err();
        assert!(e.to_string().contains("r3.bin"), "{e}");
    }
}
