//! Resuming a partition at a position a role stored itself (in file names,
//! in a checkpoint), whatever offset the consumer group hands out first.

use std::time::{Duration, Instant};

/// What to do with the next message of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Already processed: skip it.
    Skip,
    /// The consumer is ahead of the stored position: seek back to it.
    Seek(i64),
    /// The next message to process.
    Take,
}

/// How long after a seek a message past the stored position is taken for
/// one fetched before the seek (librdkafka may still deliver those) and
/// skipped, rather than answered with another seek.
pub const SEEK_SETTLE: Duration = Duration::from_secs(1);

/// Seeks, each at least [`SEEK_SETTLE`] after the last, that must all land
/// past the stored position before the log is taken to have a gap.
pub const SEEKS_BEFORE_GAP: u32 = 5;

/// The stored position of one partition and the seeks made to reach it.
#[derive(Clone, Debug)]
pub struct Resume {
    next: Option<i64>,
    seeks: u32,
    sought: Option<Instant>,
    settle: Duration,
}

impl Default for Resume {
    fn default() -> Self {
        Self::at(None)
    }
}

impl Resume {
    /// Resume at `next` (`None`: take whatever comes first, a fresh start).
    pub fn at(next: Option<i64>) -> Self {
        Self {
            next,
            seeks: 0,
            sought: None,
            settle: SEEK_SETTLE,
        }
    }

    /// The next offset to process, once known.
    pub fn next(&self) -> Option<i64> {
        self.next
    }

    /// Decides on a message at `offset`. A message past the stored
    /// position is answered with a seek back to it; in the
    /// [`SEEK_SETTLE`] after a seek such messages are skipped, as the ones
    /// fetched before it. Only when [`SEEKS_BEFORE_GAP`] seeks so spaced
    /// all land past the position is the log taken to have a gap
    /// (retention removed the records) and the message taken.
    pub fn step(&mut self, offset: i64) -> Step {
        let expected = *self.next.get_or_insert(offset);
        if offset < expected {
            return Step::Skip;
        }
        if offset > expected {
            if self.sought.is_some_and(|t| t.elapsed() < self.settle) {
                return Step::Skip;
            }
            if self.seeks < SEEKS_BEFORE_GAP {
                self.seeks += 1;
                self.sought = Some(Instant::now());
                return Step::Seek(expected);
            }
            tracing::warn!(
                offset,
                expected,
                seeks = self.seeks,
                "offsets skip ahead in the log after repeated seeks; continuing from here"
            );
        }
        self.seeks = 0;
        self.sought = None;
        Step::Take
    }

    /// Notes that the message at `offset` was processed.
    pub fn done(&mut self, offset: i64) {
        self.next = Some(offset + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_seeks_and_takes() {
        let mut r = Resume::at(Some(10));
        assert_eq!(r.step(3), Step::Skip);
        assert_eq!(r.step(12), Step::Seek(10));
        assert_eq!(r.step(10), Step::Take);
        r.done(10);
        assert_eq!(r.step(11), Step::Take);
        let mut fresh = Resume::at(None);
        assert_eq!(fresh.step(42), Step::Take);
        fresh.done(42);
        assert_eq!(fresh.next(), Some(43));
        // Messages fetched before a seek still arrive: skipped, no new seek.
        let mut stale = Resume::at(Some(1));
        assert_eq!(stale.step(8), Step::Seek(1));
        for o in 9..40 {
            assert_eq!(stale.step(o), Step::Skip);
        }
        assert_eq!(stale.step(1), Step::Take);
        let mut gap = Resume {
            settle: Duration::ZERO,
            ..Resume::at(Some(5))
        };
        for _ in 0..SEEKS_BEFORE_GAP {
            assert_eq!(gap.step(9), Step::Seek(5));
        }
        assert_eq!(gap.step(9), Step::Take);
    }
}
