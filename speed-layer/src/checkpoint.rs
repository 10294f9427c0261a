//! Checkpoints: a partition's states, offsets, watermark and dedup keys,
//! together, with a checksum, written atomically.
//!
//! Layout under the data directory:
//!
//! ```text
//! speed/checkpoints/partition=P/<next offset, 20 digits>.ckpt
//! speed/sealed/partition=P.txt      sealed epoch boundaries, one per line
//! ```
//!
//! A checkpoint file is `BRAIDCK1`, the payload length (u64 LE), the payload
//! (this crate's binary form) and its CRC-32 (u32 LE). It is written to a
//! temporary name, synced, renamed, and its directory synced, so a crash
//! leaves either the old set or the new one. On load, the newest file whose
//! magic, length and checksum hold is used; a corrupt one is refused (and
//! reported), set aside as `<name>.refused` so no later restore goes back
//! to it, and the previous one tried. The last [`KEEP`] files are kept.

use std::fs;
use std::path::{Path, PathBuf};

use braid_core::agg::AggState;
use braid_core::encoding::{DecodeError, Reader, Writer};
use braid_core::fold::{GroupKey, PartitionFolder};
use braid_core::merge::Counters;
use braid_core::speedlog::{decode_counters, decode_group, encode_counters, encode_group};

const MAGIC: &[u8; 8] = b"BRAIDCK1";
/// Checkpoint files kept per partition.
pub const KEEP: usize = 3;

/// A state of the speed layer's table: (view index, window start, group,
/// epoch start).
pub type StateKey = (usize, i64, GroupKey, i64);

/// One state with its counters and the highest offset it includes.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The state.
    pub state: AggState,
    /// Its counters.
    pub counters: Counters,
    /// Highest offset folded in.
    pub max_offset: i64,
}

/// Everything a partition needs to resume exactly where it was sealed.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The next offset to read; also the first offset of the next epoch.
    pub next_offset: i64,
    /// Sealed epochs still held, `(start, end)`.
    pub sealed: Vec<(i64, i64)>,
    /// The fold state (dedup keys, largest event time).
    pub folder: PartitionFolder,
    /// The states of every held epoch.
    pub states: Vec<(StateKey, Entry)>,
}

/// Why a checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged.
    #[error("checkpoint {path} refused: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The checkpoint directory of a partition.
pub fn dir(data_dir: &Path, partition: i32) -> PathBuf {
    data_dir.join(format!("speed/checkpoints/partition={partition}"))
}

/// The sealed-boundaries file of a partition.
pub fn sealed_file(data_dir: &Path, partition: i32) -> PathBuf {
    braid_store::Layout::new(data_dir).sealed(partition)
}

impl Checkpoint {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.ivar(self.next_offset);
        w.uvar(self.sealed.len() as u64);
        for &(s, e) in &self.sealed {
            w.ivar(s);
            w.ivar(e);
        }
        self.folder.encode(&mut w);
        w.uvar(self.states.len() as u64);
        for ((view, window, group, epoch), entry) in &self.states {
            w.uvar(*view as u64);
            w.ivar(*window);
            encode_group(&mut w, group);
            w.ivar(*epoch);
            w.ivar(entry.max_offset);
            entry.state.encode(&mut w);
            encode_counters(&mut w, &entry.counters);
        }
        w.into_bytes()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let next_offset = r.ivar("next offset")?;
        let n = r.len("sealed epochs", 2)?;
        let mut sealed = Vec::with_capacity(n);
        for _ in 0..n {
            sealed.push((r.ivar("epoch start")?, r.ivar("epoch end")?));
        }
        let folder = PartitionFolder::decode(&mut r)?;
        let n = r.len("states", 4)?;
        let mut states = Vec::with_capacity(n);
        for _ in 0..n {
            let view = r.uvar("view")? as usize;
            let window = r.ivar("window")?;
            let group = decode_group(&mut r)?;
            let epoch = r.ivar("epoch")?;
            let max_offset = r.ivar("max offset")?;
            let state = AggState::decode(&mut r)?;
            let counters = decode_counters(&mut r)?;
            states.push((
                (view, window, group, epoch),
                Entry {
                    state,
                    counters,
                    max_offset,
                },
            ));
        }
        r.finish()?;
        Ok(Self {
            next_offset,
            sealed,
            folder,
            states,
        })
    }

    /// Writes the checkpoint of `partition` atomically, then prunes old ones.
    pub fn write(&self, data_dir: &Path, partition: i32) -> Result<PathBuf, CheckpointError> {
        let d = dir(data_dir, partition);
        fs::create_dir_all(&d).map_err(io(&d))?;
        let payload = self.encode();
        let mut file = Vec::with_capacity(payload.len() + 20);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        file.extend_from_slice(&payload);
        file.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        let path = d.join(format!("{:020}.ckpt", self.next_offset));
        write_atomic(&path, &file)?;
        prune(&d)?;
        Ok(path)
    }

    /// Loads the newest valid checkpoint of `partition`, reporting each
    /// refused (damaged) one to `refused` and setting it aside as
    /// `<name>.refused`. `None` when there is none; an error when a file
    /// cannot be read at all (rather than going back past it).
    pub fn load(
        data_dir: &Path,
        partition: i32,
        mut refused: impl FnMut(CheckpointError),
    ) -> Result<Option<Self>, CheckpointError> {
        let d = dir(data_dir, partition);
        let mut files = list(&d)?;
        files.reverse();
        for path in files {
            match read_one(&path) {
                Ok(c) => return Ok(Some(c)),
                Err(e @ CheckpointError::Corrupt { .. }) => {
                    set_aside(&path)?;
                    refused(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

fn read_one(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bytes = fs::read(path).map_err(io(path))?;
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic or truncated header".into()));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let len = u64::from_le_bytes(len) as usize;
    if bytes.len() != 16 + len + 4 {
        return Err(corrupt(format!(
            "length {} does not match the file ({} bytes)",
            len,
            bytes.len()
        )));
    }
    let payload = &bytes[16..16 + len];
    let mut sum = [0u8; 4];
    sum.copy_from_slice(&bytes[16 + len..]);
    if crc32fast::hash(payload) != u32::from_le_bytes(sum) {
        return Err(corrupt("checksum mismatch".into()));
    }
    Checkpoint::decode(payload).map_err(|e| corrupt(e.to_string()))
}

/// Renames a refused checkpoint to `<name>.refused`, durably, so that no
/// later restore uses it: once a restore went back to an older checkpoint
/// (and readers dropped the epochs after it), going forward to the refused
/// one again would skip those epochs.
fn set_aside(path: &Path) -> Result<(), CheckpointError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".refused");
    fs::rename(path, &aside).map_err(io(path))?;
    if let Some(d) = path.parent() {
        fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(io(d))?;
    }
    Ok(())
}

fn list(d: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let mut files = match fs::read_dir(d) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(d)(e)),
    };
    files.sort();
    Ok(files)
}

fn prune(d: &Path) -> Result<(), CheckpointError> {
    let files = list(d)?;
    if files.len() > KEEP {
        for old in &files[..files.len() - KEEP] {
            fs::remove_file(old).map_err(io(old))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (see `braid_store::layout::write_atomic`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    braid_store::layout::write_atomic(path, bytes).map_err(io(path))
}

/// Reads the sealed boundaries of a partition (empty when none).
pub fn read_sealed(data_dir: &Path, partition: i32) -> Vec<i64> {
    braid_store::Layout::new(data_dir)
        .read_sealed(partition)
        .unwrap_or_default()
}

/// Records the sealed boundaries of a partition (the newest 10,000).
pub fn write_sealed(
    data_dir: &Path,
    partition: i32,
    boundaries: &[i64],
) -> Result<(), CheckpointError> {
    let keep = &boundaries[boundaries.len().saturating_sub(10_000)..];
    let text: String = keep.iter().map(|b| format!("{b}\n")).collect();
    write_atomic(&sealed_file(data_dir, partition), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_core::agg::{Aggregate, Parts};
    use braid_core::view::Settings;

    fn checkpoint(next_offset: i64) -> Checkpoint {
        let mut state = AggState::new(Parts::for_aggregates([Aggregate::Sum]));
        state.fold(next_offset as f64, 0);
        Checkpoint {
            next_offset,
            sealed: vec![(0, next_offset)],
            folder: PartitionFolder::new(&Settings::default()),
            states: vec![(
                (0, 60_000, vec![Some("d".into())], 0),
                Entry {
                    state,
                    counters: Counters::default(),
                    max_offset: next_offset - 1,
                },
            )],
        }
    }

    fn newest(dir: &Path) -> PathBuf {
        let mut files = list(&super::dir(dir, 0)).unwrap();
        files.pop().unwrap()
    }

    #[test]
    fn a_corrupt_checkpoint_is_refused_and_the_previous_one_used() {
        let tmp = tempfile::tempdir().unwrap();
        for n in [10, 20, 30] {
            checkpoint(n).write(tmp.path(), 0).unwrap();
        }
        // Truncated newest.
        let path = newest(tmp.path());
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let mut refused = Vec::new();
        let c = Checkpoint::load(tmp.path(), 0, |e| refused.push(e.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(c.next_offset, 20);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].contains("refused"), "{}", refused[0]);
        // Set aside, never used again.
        assert!(!path.exists());
        assert!(path.with_extension("ckpt.refused").exists());
        // A single flipped bit in the next one.
        let path = newest(tmp.path());
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let mut refused = Vec::new();
        let c = Checkpoint::load(tmp.path(), 0, |e| refused.push(e.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(c.next_offset, 10);
        assert!(refused[0].contains("checksum"), "{}", refused[0]);
        assert_eq!(c.states.len(), 1);
    }

    #[test]
    fn only_the_last_three_are_kept_and_none_means_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(Checkpoint::load(tmp.path(), 0, |_| {}).unwrap().is_none());
        for n in 1..=6 {
            checkpoint(n * 10).write(tmp.path(), 0).unwrap();
        }
        assert_eq!(list(&dir(tmp.path(), 0)).unwrap().len(), KEEP);
        let c = Checkpoint::load(tmp.path(), 0, |_| {}).unwrap().unwrap();
        assert_eq!(c.next_offset, 60);
        assert_eq!(
            c.states[0].1.state.to_bytes(),
            checkpoint(60).states[0].1.state.to_bytes()
        );
    }
}
