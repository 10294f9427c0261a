//! Checkpoints: a partition's states, offsets, watermark and dedup keys,
//! together, with a checksum, written atomically.
//!
//! Layout in the checkpoint store (the data directory, or any object store
//! URL given as `--checkpoint-url`, so that a partition can move to a
//! worker on another machine):
//!
//! ```text
//! speed/checkpoints/partition=P/<next offset, 20 digits>.ckpt
//! speed/sealed/partition=P.txt      sealed epoch boundaries, one per line
//! ```
//!
//! A checkpoint is `BRAIDCK1`, the payload length (u64 LE), the payload
//! (this crate's binary form) and its CRC-32 (u32 LE). It is written
//! atomically (a local file to a temporary name, synced, renamed, its
//! directory synced; an object with one put), so a crash leaves either the
//! old set or the new one. On load, the newest checkpoint whose magic,
//! length and checksum hold is used; a corrupt one is refused (and
//! reported), set aside as `<name>.refused` so no later restore goes back
//! to it, and the previous one tried. The last [`KEEP`] are kept.

use braid_core::agg::AggState;
use braid_core::encoding::{DecodeError, Reader, Writer};
use braid_core::fold::{GroupKey, PartitionFolder};
use braid_core::merge::Counters;
use braid_core::speedlog::{decode_counters, decode_group, encode_counters, encode_group};
use braid_store::{BlobError, Blobs};

const MAGIC: &[u8; 8] = b"BRAIDCK1";
/// Checkpoints kept per partition.
pub const KEEP: usize = 3;
const SUFFIX: &str = ".ckpt";

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
    /// The checkpoint store failed (reading, writing, listing).
    #[error("checkpoint store failed: {0}")]
    Store(#[from] BlobError),
    /// The published batch runs (whose cuts a restore seals at) could not
    /// be read.
    #[error("reading the published batch runs: {0}")]
    Published(#[from] braid_store::StoreError),
    /// The checkpoint is damaged.
    #[error("checkpoint {key} in {store} refused: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// The store.
        store: String,
        /// What is wrong.
        reason: String,
    },
}

/// The folder (key prefix) of a partition's checkpoints in the store.
pub fn dir(partition: i32) -> String {
    format!("speed/checkpoints/partition={partition}")
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

    /// Writes the checkpoint of `partition` atomically, then prunes old
    /// ones; returns its key.
    pub async fn write(&self, store: &Blobs, partition: i32) -> Result<String, CheckpointError> {
        let payload = self.encode();
        let mut file = Vec::with_capacity(payload.len() + 20);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        file.extend_from_slice(&payload);
        file.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        let key = format!("{}/{:020}{SUFFIX}", dir(partition), self.next_offset);
        store.put(&key, file.into()).await?;
        let keys = list(store, partition).await?;
        if keys.len() > KEEP {
            for old in &keys[..keys.len() - KEEP] {
                store.delete(old).await?;
            }
        }
        Ok(key)
    }

    /// Loads the newest valid checkpoint of `partition`, reporting each
    /// refused (damaged) one to `refused` and setting it aside as
    /// `<name>.refused`. `None` when there is none; an error when one
    /// cannot be read at all (rather than going back past it).
    pub async fn load(
        store: &Blobs,
        partition: i32,
        mut refused: impl FnMut(CheckpointError),
    ) -> Result<Option<Self>, CheckpointError> {
        let mut keys = list(store, partition).await?;
        keys.reverse();
        for key in keys {
            // Gone since the listing (pruned by a worker that held the
            // partition a moment ago): an older one is no worse.
            let Some(bytes) = store.get(&key).await? else {
                continue;
            };
            match parse(&bytes) {
                Ok(c) => return Ok(Some(c)),
                Err(reason) => {
                    // Set aside so that no later restore uses it: once a
                    // restore went back to an older checkpoint (and
                    // readers dropped the epochs after it), going forward
                    // to the refused one again would skip those epochs.
                    store.rename(&key, &format!("{key}.refused")).await?;
                    refused(CheckpointError::Corrupt {
                        key,
                        store: store.location(),
                        reason,
                    });
                }
            }
        }
        Ok(None)
    }
}

fn parse(bytes: &[u8]) -> Result<Checkpoint, String> {
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err("bad magic or truncated header".into());
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let len = u64::from_le_bytes(len) as usize;
    if bytes.len() != 16 + len + 4 {
        return Err(format!(
            "length {} does not match the file ({} bytes)",
            len,
            bytes.len()
        ));
    }
    let payload = &bytes[16..16 + len];
    let mut sum = [0u8; 4];
    sum.copy_from_slice(&bytes[16 + len..]);
    if crc32fast::hash(payload) != u32::from_le_bytes(sum) {
        return Err("checksum mismatch".into());
    }
    Checkpoint::decode(payload).map_err(|e| e.to_string())
}

/// The checkpoints of a partition, oldest first.
async fn list(store: &Blobs, partition: i32) -> Result<Vec<String>, CheckpointError> {
    let mut keys = store.list(&dir(partition)).await?;
    keys.retain(|k| k.ends_with(SUFFIX));
    // Fixed-width offsets: name order is offset order.
    keys.sort();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_core::agg::{Aggregate, Parts};
    use braid_core::view::Settings;
    use std::fs;
    use std::path::{Path, PathBuf};

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

    async fn newest(store: &Blobs, dir: &Path) -> PathBuf {
        let mut keys = list(store, 0).await.unwrap();
        dir.join(keys.pop().unwrap())
    }

    #[tokio::test]
    async fn a_corrupt_checkpoint_is_refused_and_the_previous_one_used() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Blobs::local(tmp.path());
        for n in [10, 20, 30] {
            checkpoint(n).write(&store, 0).await.unwrap();
        }
        // Truncated newest.
        let path = newest(&store, tmp.path()).await;
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let mut refused = Vec::new();
        let c = Checkpoint::load(&store, 0, |e| refused.push(e.to_string()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.next_offset, 20);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].contains("refused"), "{}", refused[0]);
        // Set aside, never used again.
        assert!(!path.exists());
        assert!(path.with_extension("ckpt.refused").exists());
        // A single flipped bit in the next one.
        let path = newest(&store, tmp.path()).await;
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let mut refused = Vec::new();
        let c = Checkpoint::load(&store, 0, |e| refused.push(e.to_string()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.next_offset, 10);
        assert!(refused[0].contains("checksum"), "{}", refused[0]);
        assert_eq!(c.states.len(), 1);
    }

    #[tokio::test]
    async fn only_the_last_three_are_kept_and_none_means_none() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Blobs::local(tmp.path());
        let none = Checkpoint::load(&store, 0, |_| {}).await.unwrap();
        assert!(none.is_none());
        for n in 1..=6 {
            checkpoint(n * 10).write(&store, 0).await.unwrap();
        }
        assert_eq!(list(&store, 0).await.unwrap().len(), KEEP);
        let c = Checkpoint::load(&store, 0, |_| {}).await.unwrap().unwrap();
        assert_eq!(c.next_offset, 60);
        assert_eq!(
            c.states[0].1.state.to_bytes(),
            checkpoint(60).states[0].1.state.to_bytes()
        );
    }

    #[tokio::test]
    async fn an_unreachable_store_is_an_error_not_an_empty_partition() {
        let store = Blobs::open_with(
            "s3://none/x",
            &[
                ("aws_endpoint".into(), "http://127.0.0.1:9".into()),
                ("aws_allow_http".into(), "true".into()),
                ("aws_region".into(), "us-east-1".into()),
                ("aws_access_key_id".into(), "k".into()),
                ("aws_secret_access_key".into(), "s".into()),
            ],
        )
        .unwrap();
        let err = Checkpoint::load(&store, 0, |_| {}).await.unwrap_err();
        assert!(err.to_string().contains("checkpoint store failed"), "{err}");
        let err = braid_store::layout::read_sealed(&store, 0)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("s3://none/x"), "{err}");
    }
}
