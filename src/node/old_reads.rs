//! Reads of messages that left the message store's cache, answered on blocking
//! threads instead of the controller task.
//!
//! Why: such a read goes to the segment files; on a slow or stalled disk it
//! would hold the controller (and with it heartbeats and votes) for as long as
//! the disk takes. The controller only hands out a file reader (a flush and a
//! clone of the segment list) and moves on; the blocking thread reads, checks
//! the records' crcs and answers the client itself.
//!
//! Invariants:
//! - at most [`MAX_IN_FLIGHT`] old reads run at once; one more stays parked with
//!   the other waiting reads and is tried again on the next controller turn, so
//!   a stalled disk costs a bounded number of blocking threads;
//! - a read is started only after the controller checked it (read index
//!   applied, offset not trimmed); it answers with every message from its
//!   offset up to its limit or the store's length when it was taken: the part
//!   below the cache from the files (written, so immutable; a segment removed
//!   meanwhile stays readable through the open file it holds), the newer part
//!   copied from the cache by the controller (`msgstore::DetachedRead`).

use super::waiters::{RawRead, ReadReply};
use crate::api::ApiError;
use crate::msgstore::DetachedRead;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Old reads running at once (each holds a blocking thread).
pub const MAX_IN_FLIGHT: usize = 4;

/// The slots for old reads.
pub struct OldReads {
    slots: Arc<Semaphore>,
}

impl Default for OldReads {
    fn default() -> Self {
        OldReads {
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

/// One old read, ready to run.
pub struct OldRead {
    pub read: DetachedRead,
    /// `next_offset` if nothing is read (cannot happen for a checked read, but
    /// the answer must not depend on that).
    pub next_if_empty: u64,
    /// Injected latency (fault injection's `msgstore_read_delay_ms`).
    pub delay: Duration,
    pub reply: ReadReply,
}

impl OldReads {
    /// A slot for one more old read, if one is free.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Runs `read` on a blocking thread holding `slot`; the thread answers.
    pub fn spawn(&self, read: OldRead, slot: OwnedSemaphorePermit) {
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let answer = run(&read);
            let _ = read.reply.send(answer);
        });
    }
}

fn run(read: &OldRead) -> Result<RawRead, ApiError> {
    if !read.delay.is_zero() {
        std::thread::sleep(read.delay);
    }
    match read.read.run() {
        Ok(messages) => Ok(RawRead {
            next_offset: messages.last().map_or(read.next_if_empty, |(o, _)| o + 1),
            messages,
        }),
        Err(e) => {
            tracing::error!(error = %e, "reading the message store failed");
            Err(ApiError::Storage(format!("read failed: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::sync::oneshot;

    fn read(from: u64, reply: ReadReply) -> OldRead {
        let mut store = crate::msgstore::MessageStore::memory();
        for i in 0..10 {
            store.append(Bytes::from(format!("m{i}")));
        }
        OldRead {
            read: store.detached_read(from, 3).unwrap(),
            next_if_empty: 10,
            delay: Duration::ZERO,
            reply,
        }
    }

    #[tokio::test]
    async fn answers_on_a_blocking_thread_and_frees_its_slot() {
        let reads = OldReads::default();
        let (tx, rx) = oneshot::channel();
        let slot = reads.slot().expect("a free slot");
        reads.spawn(read(4, tx), slot);
        let got = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("answered within 30 s")
            .expect("the reply was sent")
            .expect("the read succeeds");
        let offsets: Vec<u64> = got.messages.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, [4, 5, 6]);
        assert_eq!(got.messages[0].1, "m4");
        assert_eq!(got.next_offset, 7);
        // Every slot is free again once the reads are done.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let held: Vec<_> = (0..MAX_IN_FLIGHT).map_while(|_| reads.slot()).collect();
            if held.len() == MAX_IN_FLIGHT {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a slot was never freed"
            );
            drop(held);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn at_most_max_in_flight_slots() {
        let reads = OldReads::default();
        let held: Vec<_> = (0..MAX_IN_FLIGHT).map(|_| reads.slot().unwrap()).collect();
        assert!(reads.slot().is_none(), "one slot too many");
        drop(held);
        assert!(reads.slot().is_some());
    }
}
