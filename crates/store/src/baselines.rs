//! Seasonal baselines a batch run trained: `baselines/<run id>.bin` (the
//! core's checksummed encoding) and `baselines/CURRENT`. The batch layer
//! writes them; the speed layer's detectors and the serving layer's
//! forecasts read them, and pick up a new run by watching `CURRENT`.

use std::fs;
use std::path::PathBuf;

use braid_core::baseline::Baselines;

use crate::Layout;
use crate::layout::{sync_dir, write_atomic};
use crate::views::{StoreError, format_err, io};

const CURRENT: &str = "CURRENT";

impl Layout {
    /// Trained seasonal baselines, one file per batch run.
    pub fn baselines(&self) -> PathBuf {
        self.root().join("baselines")
    }
}

/// Writes `b` as its run's file (create-only by rename) and makes it
/// current; keeps the newest `keep` files.
pub fn publish(layout: &Layout, b: &Baselines, keep: usize) -> Result<PathBuf, StoreError> {
    let dir = layout.baselines();
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(format!("{}.bin", b.run_id));
    write_atomic(&path, &b.encode()).map_err(io(&path))?;
    let current = dir.join(CURRENT);
    write_atomic(&current, format!("{}\n", b.run_id).as_bytes()).map_err(io(&current))?;
    sync_dir(&dir).map_err(io(&dir))?;
    let mut runs: Vec<String> = fs::read_dir(&dir)
        .map_err(io(&dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".bin").map(str::to_string))
        .collect();
    runs.sort();
    let n = runs.len();
    for old in runs
        .into_iter()
        .take(n.saturating_sub(keep.max(1)))
        .filter(|r| *r != b.run_id)
    {
        let _ = fs::remove_file(dir.join(format!("{old}.bin")));
    }
    Ok(path)
}

/// The run id of the current baselines, if any.
pub fn current_id(layout: &Layout) -> Result<Option<String>, StoreError> {
    let path = layout.baselines().join(CURRENT);
    match fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t.trim().to_string()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Reads the baselines of `run_id`.
pub fn read(layout: &Layout, run_id: &str) -> Result<Baselines, StoreError> {
    let path = layout.baselines().join(format!("{run_id}.bin"));
    let bytes = fs::read(&path).map_err(io(&path))?;
    Baselines::decode(&bytes).map_err(|e| format_err(&path, e))
}

/// The current baselines, if any.
pub fn read_current(layout: &Layout) -> Result<Option<Baselines>, StoreError> {
    current_id(layout)?.map(|id| read(layout, &id)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

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
