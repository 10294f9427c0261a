//! Resuming a partition at a position a role stored itself (in file names,
//! in a checkpoint), whatever offset the consumer group hands out first.

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

/// The stored position of one partition and the seeks made to reach it.
#[derive(Clone, Debug, Default)]
pub struct Resume {
    next: Option<i64>,
    seeks: u32,
}

impl Resume {
    /// Resume at `next` (`None`: take whatever comes first, a fresh start).
    pub fn at(next: Option<i64>) -> Self {
        Self { next, seeks: 0 }
    }

    /// The next offset to process, once known.
    pub fn next(&self) -> Option<i64> {
        self.next
    }

    /// Decides on a message at `offset`. After three seeks that still land
    /// past the stored position the log is taken to have a gap (compaction,
    /// retention) and the message is taken.
    pub fn step(&mut self, offset: i64) -> Step {
        let expected = *self.next.get_or_insert(offset);
        if offset < expected {
            Step::Skip
        } else if offset > expected && self.seeks < 3 {
            self.seeks += 1;
            Step::Seek(expected)
        } else {
            if offset > expected {
                tracing::warn!(
                    offset,
                    expected,
                    "offsets skip ahead in the log; continuing from here"
                );
            }
            self.seeks = 0;
            Step::Take
        }
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
        let mut gap = Resume::at(Some(5));
        for _ in 0..3 {
            assert_eq!(gap.step(9), Step::Seek(5));
        }
        assert_eq!(gap.step(9), Step::Take);
    }
}
