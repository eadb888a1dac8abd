//! Chunked, resumable snapshot transfer (`Replication.InstallSnapshot`).
//!
//! A snapshot may be far larger than any sane gRPC message, and sending it must not
//! hold up the replication stream, let alone heartbeats. So it travels in chunks on
//! its own RPC, and an interrupted transfer resumes where it stopped: the receiver
//! keeps the partial file and its first ack says how many bytes it already holds.
//! The protocol is described in `proto/raftlog.proto` above `SnapshotChunk`.
//!
//! Invariants:
//! - the handler only ever sees a file whose length and crc32c match what the
//!   sender declared; a mismatch deletes the partial file;
//! - chunks are appended strictly at the receiver's current length (no holes, no
//!   overlap); any other offset aborts the transfer;
//! - at most one transfer per sender writes at a time: a newer transfer from the
//!   same sender supersedes an older one (a half-dead stream cannot corrupt it);
//! - a sender keeps at most one partial file here (older ones are removed);
//! - the staging directory and every partial file's creation, rename and removal
//!   are made durable through [`crate::durable`] before the transfer goes on;
//! - file names are derived from peer input only through [`file_component`], so a
//!   node id can never escape the snapshot directory.

use super::dial::Svc;
use super::pb;
use super::pb::replication_client::ReplicationClient;
use super::{InboundHandler, ReceivedSnapshot, SnapshotSource};
use crate::core::{Envelope, NodeId, SnapshotMeta};
use crate::durable;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

/// Why a transfer failed (either side).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    #[error("{0}")]
    Protocol(String),
    #[error("rpc failed: {0}")]
    Rpc(#[from] Status),
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    #[error("receiver reported: {0}")]
    Rejected(String),
    #[error("no progress for {0:?}")]
    Stalled(Duration),
    #[error("superseded by a newer transfer from the same sender")]
    Superseded,
    #[error("stream ended before the last chunk")]
    Interrupted,
}

fn protocol(msg: impl Into<String>) -> TransferError {
    TransferError::Protocol(msg.into())
}

// ------------------------------------------------------------------ receiver

/// The next message of an inbound stream, or `None` when it ends or the server stops.
pub(crate) async fn next_or_stop<T>(
    stream: &mut Streaming<T>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<T>, Status> {
    tokio::select! {
        msg = stream.message() => msg,
        _ = stop.wait_for(|stopped| *stopped) => Ok(None),
    }
}

/// What a receiving transfer needs of the server (implemented by its shared
/// state), so this module does not depend on the server's.
pub(crate) trait Receiving: Send + Sync + 'static {
    fn handler(&self) -> &dyn InboundHandler;
    /// Becomes true when the server shuts down.
    fn stop(&self) -> watch::Receiver<bool>;
    fn max_snapshot_bytes(&self) -> u64;
    fn transfers(&self) -> &Transfers;
}

/// One write slot per sender: the generation of the transfer allowed to write.
#[derive(Default)]
pub(crate) struct Transfers {
    slots: std::sync::Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<u64>>>>,
}

impl Transfers {
    fn slot(&self, from: &str) -> Arc<tokio::sync::Mutex<u64>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(from.to_string()).or_default().clone()
    }
}

/// Serves one `InstallSnapshot` call: returns the ack stream and assembles the
/// snapshot on a task of its own.
/// `sender`, when given, is the verified node the transfer must come from.
pub(crate) fn receive(
    shared: Arc<dyn Receiving>,
    chunks: Streaming<pb::SnapshotChunk>,
    sender: Option<NodeId>,
) -> ReceiverStream<Result<pb::SnapshotAck, Status>> {
    let (acks, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut rx = Receiver {
            shared,
            chunks,
            acks,
            sender,
        };
        let last = match rx.run().await {
            Ok(ack) => ack,
            Err(TransferError::Interrupted) => return,
            Err(e) => {
                warn!(error = %e, "snapshot transfer failed");
                pb::SnapshotAck {
                    error: e.to_string(),
                    ..Default::default()
                }
            }
        };
        let _ = rx.acks.send(Ok(last)).await;
    });
    ReceiverStream::new(rx)
}

/// The receiving side of one transfer.
struct Receiver {
    shared: Arc<dyn Receiving>,
    chunks: Streaming<pb::SnapshotChunk>,
    acks: mpsc::Sender<Result<pb::SnapshotAck, Status>>,
    /// The verified sender (TLS with node-id verification), if known.
    sender: Option<NodeId>,
}

/// What the header chunk declared.
struct Header {
    from: NodeId,
    to: NodeId,
    term: u64,
    meta: SnapshotMeta,
    total: u64,
}

/// The partial file being written and the generation allowed to write it.
struct Partial {
    path: PathBuf,
    file: File,
    len: u64,
    /// crc32c of the `len` bytes held (kept up as chunks arrive: no re-read).
    crc: u32,
    slot: Arc<tokio::sync::Mutex<u64>>,
    generation: u64,
}

impl Receiver {
    async fn run(&mut self) -> Result<pb::SnapshotAck, TransferError> {
        let hdr = self.header().await?;
        let started = std::time::Instant::now();
        let mut partial = self.open_partial(&hdr).await?;
        self.ack(partial.len, true).await?;
        let crc = self.receive_chunks(&hdr, &mut partial).await?;
        let path = verify_and_seal(partial, hdr.total, crc).await?;
        let snap = ReceivedSnapshot {
            from: hdr.from,
            to: hdr.to,
            term: hdr.term,
            meta: hdr.meta,
            path,
            size: hdr.total,
        };
        // `ms`: this transfer (resumed or not) to the verified file; `bytes` the whole.
        let ms = started.elapsed().as_millis() as u64;
        info!(from = %snap.from, index = snap.meta.index, bytes = snap.size, ms, "snapshot received");
        self.shared
            .handler()
            .snapshot_received(snap)
            .await
            .map_err(TransferError::Rejected)?;
        Ok(pb::SnapshotAck {
            received_bytes: hdr.total,
            complete: true,
            error: String::new(),
        })
    }

    async fn next(&mut self) -> Result<pb::SnapshotChunk, TransferError> {
        let mut stop = self.shared.stop();
        next_or_stop(&mut self.chunks, &mut stop)
            .await?
            .ok_or(TransferError::Interrupted)
    }

    async fn header(&mut self) -> Result<Header, TransferError> {
        let c = self.next().await?;
        let meta = c
            .meta
            .ok_or_else(|| protocol("the first chunk has no meta"))?;
        let meta = SnapshotMeta::try_from(meta).map_err(|e| protocol(e.to_string()))?;
        if c.from.is_empty() || c.to.is_empty() {
            return Err(protocol("the first chunk has no from/to"));
        }
        if self.sender.as_ref().is_some_and(|s| *s != c.from) {
            return Err(protocol(format!(
                "a certificate of {:?} cannot send a snapshot as {:?}",
                self.sender, c.from
            )));
        }
        if c.total_size > self.shared.max_snapshot_bytes() {
            return Err(protocol(format!(
                "snapshot of {} bytes exceeds the limit of {}",
                c.total_size,
                self.shared.max_snapshot_bytes()
            )));
        }
        debug!(from = %c.from, index = meta.index, total = c.total_size, "snapshot transfer starting");
        Ok(Header {
            from: c.from,
            to: c.to,
            term: c.term,
            meta,
            total: c.total_size,
        })
    }

    /// Opens (or resumes) this snapshot's partial file, superseding any transfer
    /// from the same sender still in progress.
    async fn open_partial(&mut self, hdr: &Header) -> Result<Partial, TransferError> {
        let dir = self.shared.handler().snapshot_dir();
        let slot = self.shared.transfers().slot(&hdr.from);
        let mut generation = slot.lock().await;
        *generation += 1;
        let (path, file) = open_staged(&dir, &hdr.from, &partial_name(hdr)).await?;
        let mut len = file.metadata().await?.len();
        if len > hdr.total {
            file.set_len(0).await?;
            len = 0;
        }
        // A resumed transfer reads what it holds once; new chunks add to the crc.
        let crc = if len > 0 {
            crc_of_file(&path).await?
        } else {
            0
        };
        let generation_now = *generation;
        drop(generation);
        Ok(Partial {
            path,
            file,
            len,
            crc,
            slot,
            generation: generation_now,
        })
    }

    /// Appends data chunks until the one marked `done`; returns its crc32c.
    async fn receive_chunks(
        &mut self,
        hdr: &Header,
        partial: &mut Partial,
    ) -> Result<u32, TransferError> {
        loop {
            let c = self.next().await?;
            if c.offset != partial.len {
                return Err(protocol(format!(
                    "chunk at offset {} but {} bytes are held",
                    c.offset, partial.len
                )));
            }
            if partial.len + c.data.len() as u64 > hdr.total {
                return Err(protocol("chunks exceed the declared total size"));
            }
            partial.append(&c.data).await?;
            if c.done {
                return Ok(c.crc32c);
            }
            self.ack(partial.len, false).await?;
        }
    }

    /// Progress acks are advisory and dropped when the sender is not reading them;
    /// the first ack (the resume offset) must arrive.
    async fn ack(&mut self, received_bytes: u64, must: bool) -> Result<(), TransferError> {
        let ack = pb::SnapshotAck {
            received_bytes,
            ..Default::default()
        };
        if must {
            self.acks
                .send(Ok(ack))
                .await
                .map_err(|_| TransferError::Interrupted)
        } else {
            let _ = self.acks.try_send(Ok(ack));
            Ok(())
        }
    }
}

impl Partial {
    /// Appends `data` unless a newer transfer from the same sender took over.
    async fn append(&mut self, data: &[u8]) -> Result<(), TransferError> {
        let generation = self.slot.lock().await;
        if *generation != self.generation {
            return Err(TransferError::Superseded);
        }
        self.file.write_all(data).await?;
        self.file.flush().await?;
        self.len += data.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, data);
        Ok(())
    }
}

/// Creates the staging directory, removes `from`'s other partial files and
/// opens (or resumes) the partial file `name`, each change durable.
async fn open_staged(dir: &Path, from: &str, name: &str) -> std::io::Result<(PathBuf, File)> {
    let d = dir.to_path_buf();
    blocking(move || durable::create_dir_durable(&d)).await?;
    remove_other_partials(dir, from, name).await;
    let path = dir.join(name);
    let p = path.clone();
    let file = blocking(move || {
        let opts = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .clone();
        durable::create_file_durable(&p, &opts)
    })
    .await?;
    Ok((path, File::from_std(file)))
}

/// Checks length and checksum, then renames the partial file to its final name.
async fn verify_and_seal(partial: Partial, total: u64, crc: u32) -> Result<PathBuf, TransferError> {
    partial.file.sync_all().await?;
    let actual = partial.crc;
    if partial.len != total || actual != crc {
        let p = partial.path.clone();
        let _ = blocking(move || durable::remove_durable(&p)).await;
        return Err(protocol(format!(
            "snapshot corrupt: {} of {total} bytes, crc32c {actual:08x}, expected {crc:08x}",
            partial.len
        )));
    }
    let sealed = partial.path.with_extension("snap");
    let (from, to) = (partial.path.clone(), sealed.clone());
    blocking(move || durable::rename_durable(&from, &to)).await?;
    Ok(sealed)
}

/// Runs a blocking file-system call (a [`durable`] helper) off the runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(format!("file task failed: {e}")))?
}

async fn crc_of_file(path: &Path) -> std::io::Result<u32> {
    let mut file = File::open(path).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

/// `snap-<from>.<term>-<index>-<total>.partial`: identifies a snapshot from one
/// sender, so a retry of the same snapshot resumes and a different one starts over.
fn partial_name(hdr: &Header) -> String {
    format!(
        "{}{}-{}-{}.partial",
        sender_prefix(&hdr.from),
        hdr.meta.term,
        hdr.meta.index,
        hdr.total
    )
}

fn sender_prefix(from: &str) -> String {
    format!("snap-{}.", file_component(from))
}

/// A node id made safe as part of a file name: anything but `[A-Za-z0-9_-]` is
/// hex-escaped (so no `/`, no `..`, no `.` that could end the prefix).
fn file_component(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Removes this sender's partial files other than `keep`: a sender has one
/// snapshot in flight, so older partials are dead weight.
async fn remove_other_partials(dir: &Path, from: &str, keep: &str) {
    let prefix = sender_prefix(from);
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".partial") && name != keep {
            debug!(file = %name, "removing a stale partial snapshot");
            let p = entry.path();
            let _ = blocking(move || durable::remove_durable(&p)).await;
        }
    }
}

// ------------------------------------------------------------------ sender

/// How the sender chunks and how long it waits for progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendOptions {
    pub(crate) chunk_bytes: usize,
    pub(crate) stall_timeout: Duration,
}

/// Sends the snapshot `meta` whose bytes `source` holds (addressed by `env`) in
/// chunks, resuming where the receiver stands. Returns how many data bytes went
/// over the wire. Memory: a few chunks, whatever the snapshot's size.
pub(crate) async fn send(
    client: &mut ReplicationClient<Svc>,
    env: &Envelope,
    meta: &SnapshotMeta,
    source: Arc<dyn SnapshotSource>,
    opts: SendOptions,
) -> Result<u64, TransferError> {
    let total = source.size();
    let (tx, body) = mpsc::channel(2);
    let _ = tx.try_send(header_chunk(env, meta, total));
    let mut acks = client
        .install_snapshot(ReceiverStream::new(body))
        .await?
        .into_inner();
    let start = next_ack(&mut acks, opts.stall_timeout)
        .await?
        .received_bytes;
    if start > total {
        return Err(protocol(format!(
            "receiver holds {start} bytes of a {total}-byte snapshot"
        )));
    }
    let mut sender = ChunkSender { tx, acks, opts };
    sender.send_from(source, start).await?;
    sender.wait_complete().await?;
    Ok(total - start)
}

fn header_chunk(env: &Envelope, meta: &SnapshotMeta, total: u64) -> pb::SnapshotChunk {
    pb::SnapshotChunk {
        from: env.from.clone(),
        to: env.to.clone(),
        term: env.term,
        meta: Some(meta.into()),
        total_size: total,
        ..Default::default()
    }
}

/// Reads `len` bytes at `offset` of `source` on a blocking thread.
async fn read_chunk(
    source: &Arc<dyn SnapshotSource>,
    offset: u64,
    len: usize,
) -> Result<Bytes, TransferError> {
    let source = source.clone();
    let chunk = blocking(move || {
        let mut buf = vec![0u8; len];
        source.read_at(offset, &mut buf)?;
        Ok(buf)
    })
    .await?;
    Ok(Bytes::from(chunk))
}

/// Waits for the next ack; an ack with an error ends the transfer.
async fn next_ack(
    acks: &mut Streaming<pb::SnapshotAck>,
    stall: Duration,
) -> Result<pb::SnapshotAck, TransferError> {
    let ack = tokio::time::timeout(stall, acks.message())
        .await
        .map_err(|_| TransferError::Stalled(stall))??
        .ok_or_else(|| protocol("the receiver closed the stream without an answer"))?;
    if !ack.error.is_empty() {
        return Err(TransferError::Rejected(ack.error));
    }
    Ok(ack)
}

struct ChunkSender {
    tx: mpsc::Sender<pb::SnapshotChunk>,
    acks: Streaming<pb::SnapshotAck>,
    opts: SendOptions,
}

impl ChunkSender {
    /// Sends `source[start..]`; the last chunk carries `done` and the crc32c of
    /// the whole snapshot (a resumed transfer reads the part already sent to
    /// compute it). An empty remainder still sends the final (empty) chunk.
    async fn send_from(
        &mut self,
        source: Arc<dyn SnapshotSource>,
        start: u64,
    ) -> Result<(), TransferError> {
        let total = source.size();
        let step = self.opts.chunk_bytes.max(1) as u64;
        let mut crc = 0;
        let mut at = 0;
        while at < start {
            let n = step.min(start - at);
            crc = crc32c::crc32c_append(crc, &read_chunk(&source, at, n as usize).await?);
            at += n;
        }
        let mut offset = start;
        loop {
            let end = (offset + step).min(total);
            let done = end == total;
            let data = read_chunk(&source, offset, (end - offset) as usize).await?;
            crc = crc32c::crc32c_append(crc, &data);
            let chunk = pb::SnapshotChunk {
                offset,
                data,
                done,
                crc32c: if done { crc } else { 0 },
                ..Default::default()
            };
            self.push(chunk).await?;
            if done {
                return Ok(());
            }
            offset = end;
        }
    }

    /// Queues one chunk, reading acks meanwhile so an error ack stops us early.
    async fn push(&mut self, chunk: pb::SnapshotChunk) -> Result<(), TransferError> {
        let stall = self.opts.stall_timeout;
        let deadline = tokio::time::sleep(stall);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                permit = self.tx.reserve() => {
                    let permit = permit.map_err(|_| protocol("request stream closed"))?;
                    permit.send(chunk);
                    return Ok(());
                }
                ack = self.acks.message() => {
                    let ack = ack?.ok_or_else(|| protocol("the receiver closed the stream"))?;
                    if !ack.error.is_empty() {
                        return Err(TransferError::Rejected(ack.error));
                    }
                }
                _ = &mut deadline => return Err(TransferError::Stalled(stall)),
            }
        }
    }

    /// Reads acks until the receiver confirms the whole snapshot.
    async fn wait_complete(&mut self) -> Result<(), TransferError> {
        loop {
            if next_ack(&mut self.acks, self.opts.stall_timeout)
                .await?
                .complete
            {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_cannot_escape_the_directory() {
        assert_eq!(file_component("n1"), "n1");
        assert_eq!(file_component("../etc/x"), "%2e%2e%2fetc%2fx");
        assert_eq!(file_component("a.b"), "a%2eb");
        assert!(!sender_prefix("n1").starts_with(&sender_prefix("n")));
    }

    async fn staged(dir: &Path, name: &str, data: &[u8]) -> Partial {
        let (path, mut file) = open_staged(dir, "n1", name).await.unwrap();
        file.write_all(data).await.unwrap();
        Partial {
            path,
            file,
            len: data.len() as u64,
            crc: crc32c::crc32c(data),
            slot: Arc::new(tokio::sync::Mutex::new(0)),
            generation: 0,
        }
    }

    /// Every staging change (directory, partial files, the stale partial
    /// removed, the corrupt one removed, the seal) has its parent synced.
    #[tokio::test]
    async fn staging_changes_are_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data/snap-incoming");
        drop(staged(&dir, "snap-n1.1-5-3.partial", b"old").await);
        let bad = staged(&dir, "snap-n1.2-9-3.partial", b"abc").await;
        assert!(verify_and_seal(bad, 3, 0).await.is_err());
        let good = staged(&dir, "snap-n1.2-9-3.partial", b"abc").await;
        let sealed = verify_and_seal(good, 3, crc32c::crc32c(b"abc"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&sealed).unwrap(), b"abc");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "only the sealed file is left: {left:?}");
        crate::durable::record::assert_durable(tmp.path());
    }
}
