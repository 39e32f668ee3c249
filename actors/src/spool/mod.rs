//! A durable, synchronous disk spool for sealed report batches (no actix, no tokio).
//!
//! The Reporter puts every sealed batch here before trying to send it, and removes it only once
//! the API answered 2xx ([`Spool::ack`]) or refused it for good ([`Spool::quarantine`]). Every
//! call that changes the spool returns only after its change is on disk (`fsync`), so the
//! caller may treat `Ok` as durable.
//!
//! # Why a small segment format rather than an embedded store
//!
//! The workload is a strict FIFO of opaque blobs (append at the tail, acknowledge near the head),
//! with one writer. An append-only segment log with a separate ack log matches that exactly:
//! one `write` + one `fdatasync` per batch, deletion by unlinking whole segments (no compaction
//! of live data, no write amplification), and files an operator can inspect, copy or set aside
//! one by one. A B-tree store (redb, sled, SQLite) would bring its own page format, a larger
//! dependency and, crucially, all-or-nothing failure: a damaged page can make the whole
//! database refuse to open, whereas here damage is confined to the bytes that are damaged and
//! every other record is still delivered. The only new dependency is `crc32fast`.
//!
//! # On-disk layout
//!
//! ```text
//! DIR/
//!   00000000000000000001.seg   segments: 20-digit zero-padded id, so lexical = numeric order
//!   00000000000000000002.seg
//!   acks.log                   ack log: one fixed-size entry per acknowledged record
//!   open.journal               results of the batch still being filled ([`journal`])
//!   quarantine/                batches the API refused for good: <stamp>-<seq>-<batch_id>.body
//!                              + .reason.json (reason, batch_id, results, time)
//!   corrupt/                   damaged bytes and segments set aside: <stamp>-<segment>[-at-<off>.bin]
//! ```
//!
//! All integers are little-endian; checksums are CRC-32 (IEEE).
//!
//! - **Segment** = header `"LUMSPOOL" version:u32 segment_id:u64 crc:u32` (24 bytes, crc over the
//!   first 20) followed by records. A segment is created as `NAME.seg.tmp`, its header written
//!   and fsync'd, then renamed and the directory fsync'd, so a `.seg` file always starts with a
//!   whole header. A new segment is started when the current one would exceed
//!   [`SpoolLimits::segment_bytes`], and on every open (old segments are never appended to).
//! - **Record** = `magic "\xF7LR1" | body_len:u32 | crc:u32 | seq:u64 | batch_id:[16] |
//!   results:u32 | body` (40-byte header). The crc covers `body_len`, `seq`, `batch_id`,
//!   `results` and the body. `seq` is the [`RecordId`]: global, strictly increasing, never reused.
//!   `0xF7` cannot occur in UTF-8, so after damage the scanner finds the next record reliably.
//! - **Ack log** = 16-byte entries `"ACK1" seq:u64 crc:u32` (a record was acknowledged) or
//!   `"HWM1" next_seq:u64 crc:u32` (every seq below was used). It is compacted (written to
//!   `acks.log.tmp`, fsync'd, renamed) on open and when it grows, keeping only acks of records
//!   still inside a segment. Acks are keyed by `seq`, so rewriting a segment does not disturb
//!   them.
//!
//! # Guarantees
//!
//! - [`Spool::append`] returns `Ok` only after the record is written and `fdatasync`'d (and, when
//!   it started a segment, the segment and the directory are fsync'd). Such a record survives a
//!   crash and comes back exactly once, in order. A record whose append failed or was
//!   interrupted may or may not come back (it never comes back damaged).
//! - [`Spool::ack`] returns `Ok` only after the ack entry is fsync'd; an acknowledged record never
//!   comes back. The ack is made durable *before* any segment is unlinked. Whole segments whose
//!   records are all acknowledged are deleted (the segment being written is deleted by the next
//!   append, which then starts a new one, or at the next open).
//! - [`Spool::quarantine`] writes the body and the reason into `quarantine/` (fsync'd) and then
//!   acknowledges the record.
//! - Order: records are returned in `seq` order, which is append order, across any number of
//!   segments and restarts.
//! - Bounded: an append that would take the segment files past [`SpoolLimits::max_bytes`] fails
//!   with [`SpoolError::Full`]; nothing already spooled is dropped.
//! - Recovery ([`Spool::open`]) never panics and never refuses to open because of damaged data:
//!   a torn tail (partial last record of the newest segment, or zeros there) is truncated; a
//!   record with a bad checksum, magic or length is copied to `corrupt/` and cut out of its
//!   segment (the segment is rewritten atomically); a segment with a bad header is moved to
//!   `corrupt/` whole; a damaged ack-log entry is skipped (the log is copied to `corrupt/`
//!   first; the records it acknowledged may be sent again, and the API de-duplicates by
//!   `batch_id`). Everything set aside is logged with `tracing::warn!` and counted in the
//!   [`RecoveryReport`]. Leftover `*.tmp` files are removed; files the spool does not know are
//!   left alone and reported. Only I/O errors (permissions, a full disk) fail `open`.
//! - A record found damaged later, when it is read, is set aside the same way and skipped by
//!   [`Spool::peek_oldest`].
//!
//! Not covered: two processes opening the same directory at once (the agent runs once per
//! host; a lock file can be added when the MSRV allows `File::try_lock`), and damage that a
//! CRC-32 cannot detect.

mod format;
mod journal;
mod recover;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::reporter::batcher::SealedBatch;
use format::{AckEntry, Parsed, RecordHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
pub use journal::{Journal, OpenBatch};
use journal::{JOURNAL, JOURNAL_TMP};
pub use recover::RecoveryReport;

/// Default bound on the spool's segment files: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default size at which a new segment is started: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Largest body a record may carry.
pub const MAX_RECORD_BODY: usize = format::MAX_BODY_LEN;

const ACKS: &str = "acks.log";
const ACKS_TMP: &str = "acks.log.tmp";
const QUARANTINE: &str = "quarantine";
const CORRUPT: &str = "corrupt";
/// Compact the ack log once it holds more entries than this (and 4× the useful ones).
const ACK_COMPACT_MIN: usize = 4096;

/// Size bounds of a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Maximum total size of the segment files (`spool.max_bytes`).
    pub max_bytes: u64,
    /// A new segment is started when the current one would grow past this.
    pub segment_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> SpoolLimits {
        SpoolLimits {
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Identifies one spooled record; stable across restarts, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(u64);

impl RecordId {
    /// The record's sequence number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A record to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// The batch's id (kept across retries).
    pub batch_id: Uuid,
    /// How many host results the batch holds.
    pub results: u32,
    /// The exact bytes to post.
    pub body: &'a [u8],
}

impl<'a> From<&'a SealedBatch> for NewRecord<'a> {
    fn from(batch: &'a SealedBatch) -> NewRecord<'a> {
        NewRecord {
            batch_id: batch.batch_id,
            results: u32::try_from(batch.results).unwrap_or(u32::MAX),
            body: &batch.body,
        }
    }
}

/// A record read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    /// Where it is in the spool.
    pub id: RecordId,
    /// The batch's id.
    pub batch_id: Uuid,
    /// How many host results the batch holds.
    pub results: u32,
    /// The bytes to post.
    pub body: Vec<u8>,
}

impl SpoolRecord {
    /// The batch as the Reporter knows it.
    pub fn into_sealed(self) -> SealedBatch {
        SealedBatch {
            batch_id: self.batch_id,
            results: self.results as usize,
            body: self.body,
        }
    }
}

/// A pending record's header (no body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRecord {
    /// Where it is in the spool.
    pub id: RecordId,
    /// The batch's id.
    pub batch_id: Uuid,
    /// How many host results the batch holds.
    pub results: u32,
    /// The body's length in bytes.
    pub body_len: u32,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records waiting to be delivered.
    pub records: usize,
    /// Size of the segment files on disk (what `max_bytes` bounds).
    pub bytes: u64,
    /// Segment files on disk.
    pub segments: usize,
    /// Batches in `quarantine/` (including earlier runs).
    pub quarantined: u64,
    /// Files in `corrupt/` (including earlier runs).
    pub corrupt_set_aside: u64,
    /// The configured bound.
    pub max_bytes: u64,
}

/// A spool operation failed. Every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// An I/O call failed.
    #[error("spool {}: cannot {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The record does not fit under `max_bytes`.
    #[error(
        "spool {} is full: {used} of {max} bytes used, a record of {needed} bytes does not fit",
        dir.display()
    )]
    Full {
        /// The spool directory.
        dir: PathBuf,
        /// Bytes used by segment files.
        used: u64,
        /// The configured `max_bytes`.
        max: u64,
        /// Bytes the refused record needed.
        needed: u64,
    },
    /// The body is larger than [`MAX_RECORD_BODY`].
    #[error("spool {}: a record body of {len} bytes exceeds the limit of {max} bytes", dir.display())]
    TooLarge {
        /// The spool directory.
        dir: PathBuf,
        /// The body's length.
        len: usize,
        /// [`MAX_RECORD_BODY`].
        max: usize,
    },
    /// The id is not (or no longer) pending.
    #[error("spool {}: record {id} is not pending (already acknowledged, quarantined, set aside or never written)", dir.display())]
    NotPending {
        /// The spool directory.
        dir: PathBuf,
        /// The id asked for.
        id: RecordId,
    },
    /// The record failed its checksum when read; it was set aside and will not be returned again.
    #[error("spool {}: record {id} is damaged ({reason}); set aside as {}", path.display(), set_aside.display())]
    CorruptRecord {
        /// The segment file.
        path: PathBuf,
        /// The record.
        id: RecordId,
        /// What was wrong.
        reason: &'static str,
        /// Where its bytes were copied.
        set_aside: PathBuf,
    },
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    size: u64,
    /// Pending (not acknowledged) records in it.
    live: usize,
    /// Lowest and highest seq of the records in it.
    seqs: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u64,
    offset: u64,
    header: RecordHeader,
}

#[derive(Debug)]
struct Active {
    id: u64,
    file: File,
}

/// The durable spool. See the [module documentation](self).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    segments: BTreeMap<u64, Segment>,
    pending: BTreeMap<u64, Location>,
    /// Acknowledged seqs whose records are still inside a segment on disk.
    acked_in_live: BTreeSet<u64>,
    active: Option<Active>,
    /// The ack log, open for appending; `None` means it must be rewritten before the next ack.
    acks: Option<File>,
    acks_entries: usize,
    next_seq: u64,
    next_segment: u64,
    bytes: u64,
    quarantined: u64,
    corrupt_set_aside: u64,
    /// The results of the batch being filled (see [`journal`]).
    journal: Journal,
    /// The batches found in the journal at start, until the Reporter takes them.
    open_batches: Vec<OpenBatch>,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir` and recovers it. See the module docs for
    /// what recovery does; only I/O errors make it fail.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<(Spool, RecoveryReport), SpoolError> {
        recover::open(dir, limits)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limits in force.
    pub fn limits(&self) -> SpoolLimits {
        self.limits
    }

    /// Appends a record; returns once it is on disk (fsync'd).
    pub fn append(&mut self, record: &NewRecord<'_>) -> Result<RecordId, SpoolError> {
        if record.body.len() > MAX_RECORD_BODY {
            return Err(SpoolError::TooLarge {
                dir: self.dir.clone(),
                len: record.body.len(),
                max: MAX_RECORD_BODY,
            });
        }
        let record_len = (RECORD_HEADER_LEN + record.body.len()) as u64;
        let rotate = match &self.active {
            None => true,
            // Rotate when the record does not fit, and also when nothing in the current
            // segment is pending any more, so that its space is given back at once.
            Some(active) => self.segments.get(&active.id).is_none_or(|seg| {
                seg.size > SEGMENT_HEADER_LEN as u64
                    && (seg.live == 0 || seg.size + record_len > self.limits.segment_bytes)
            }),
        };
        if rotate {
            self.retire_active();
        }
        let needed = record_len + if rotate { SEGMENT_HEADER_LEN as u64 } else { 0 };
        if self.bytes.saturating_add(needed) > self.limits.max_bytes {
            return Err(SpoolError::Full {
                dir: self.dir.clone(),
                used: self.bytes,
                max: self.limits.max_bytes,
                needed,
            });
        }
        let mut active = match self.active.take() {
            Some(active) => active,
            None => self.start_segment()?,
        };
        let seq = self.next_seq;
        // The number is used up even if the write fails: a failed write may still have reached
        // the disk, and two records must never share a seq.
        self.next_seq += 1;
        let bytes = format::encode_record(seq, record.batch_id, record.results, record.body);
        let Some(segment) = self.segments.get_mut(&active.id) else {
            return Err(SpoolError::NotPending {
                dir: self.dir.clone(),
                id: RecordId(seq),
            });
        };
        let offset = segment.size;
        if let Err(source) = active
            .file
            .write_all(&bytes)
            .and_then(|()| active.file.sync_data())
        {
            // Best effort: cut the partial record. The segment is abandoned either way (after a
            // failed fsync its pages cannot be trusted); the next append starts a new one and
            // the next open sets aside whatever remains.
            let _ = active.file.set_len(offset);
            return Err(SpoolError::Io {
                path: segment.path.clone(),
                action: "append a record",
                source,
            });
        }
        segment.size += record_len;
        segment.live += 1;
        segment.seqs = Some(match segment.seqs {
            Some((first, _)) => (first, seq),
            None => (seq, seq),
        });
        self.bytes += record_len;
        self.pending.insert(
            seq,
            Location {
                segment: active.id,
                offset,
                header: RecordHeader {
                    seq,
                    batch_id: record.batch_id,
                    results: record.results,
                    body_len: record.body.len() as u32,
                },
            },
        );
        self.active = Some(active);
        Ok(RecordId(seq))
    }

    /// The oldest pending record, with its body. A record found damaged is set aside (logged,
    /// counted) and the next one is returned.
    pub fn peek_oldest(&mut self) -> Result<Option<SpoolRecord>, SpoolError> {
        while let Some(&seq) = self.pending.keys().next() {
            match self.read(RecordId(seq)) {
                Ok(record) => return Ok(Some(record)),
                Err(SpoolError::CorruptRecord { .. }) => continue,
                Err(other) => return Err(other),
            }
        }
        Ok(None)
    }

    /// The pending records' headers, oldest first.
    pub fn iter_pending(&self) -> impl Iterator<Item = PendingRecord> + '_ {
        self.pending.values().map(|loc| PendingRecord {
            id: RecordId(loc.header.seq),
            batch_id: loc.header.batch_id,
            results: loc.header.results,
            body_len: loc.header.body_len,
        })
    }

    /// Reads one pending record. If its checksum fails it is set aside (copied to `corrupt/`,
    /// acknowledged so it never comes back) and [`SpoolError::CorruptRecord`] is returned.
    pub fn read(&mut self, id: RecordId) -> Result<SpoolRecord, SpoolError> {
        let not_pending = || SpoolError::NotPending {
            dir: self.dir.clone(),
            id,
        };
        let loc = *self.pending.get(&id.0).ok_or_else(not_pending)?;
        let path = self
            .segments
            .get(&loc.segment)
            .ok_or_else(not_pending)?
            .path
            .clone();
        let mut file = File::open(&path).map_err(io_err(&path, "open a segment"))?;
        file.seek(SeekFrom::Start(loc.offset))
            .map_err(io_err(&path, "seek in a segment"))?;
        let mut buf = Vec::with_capacity(loc.header.total_len() as usize);
        file.take(loc.header.total_len())
            .read_to_end(&mut buf)
            .map_err(io_err(&path, "read a record"))?;
        let reason = match format::parse_record(&buf) {
            Parsed::Valid(header) if header == loc.header => {
                buf.drain(..RECORD_HEADER_LEN);
                return Ok(SpoolRecord {
                    id,
                    batch_id: header.batch_id,
                    results: header.results,
                    body: buf,
                });
            }
            Parsed::Valid(_) => "record header changed on disk",
            Parsed::Incomplete => "record truncated on disk",
            Parsed::Invalid(why) => why,
        };
        let set_aside = self.set_aside_bytes(&path, loc.offset, &buf)?;
        tracing::warn!(message = "Damaged spool record set aside.", path = %path.display(), record = id.0, batch_id = %loc.header.batch_id, reason, set_aside = %set_aside.display());
        self.ack(id)?;
        Err(SpoolError::CorruptRecord {
            path,
            id,
            reason,
            set_aside,
        })
    }

    /// Removes a record the API accepted. Durable on return.
    pub fn ack(&mut self, id: RecordId) -> Result<(), SpoolError> {
        let Some(loc) = self.pending.get(&id.0).copied() else {
            return Err(SpoolError::NotPending {
                dir: self.dir.clone(),
                id,
            });
        };
        self.write_ack(id.0)?;
        self.pending.remove(&id.0);
        self.acked_in_live.insert(id.0);
        let active_id = self.active.as_ref().map(|active| active.id);
        let deletable = match self.segments.get_mut(&loc.segment) {
            Some(segment) => {
                segment.live = segment.live.saturating_sub(1);
                segment.live == 0 && active_id != Some(loc.segment)
            }
            None => false,
        };
        if deletable {
            self.delete_segment(loc.segment);
        }
        if self.acks_entries > ACK_COMPACT_MIN
            && self.acks_entries > 4 * (self.acked_in_live.len() + 1)
        {
            if let Err(error) = self.rewrite_ack_log() {
                tracing::warn!(message = "Could not compact the spool ack log; will retry.", %error);
            }
        }
        Ok(())
    }

    /// Moves a record the API refused for good into `quarantine/` with the reason, then removes
    /// it from the spool. Returns the path of the `.reason.json` file.
    pub fn quarantine(&mut self, id: RecordId, reason: &str) -> Result<PathBuf, SpoolError> {
        let record = self.read(id)?;
        let qdir = self.dir.join(QUARANTINE);
        let stem = format!("{}-{:020}-{}", timestamp(), id.0, record.batch_id);
        let body_path = write_unique(&qdir, &stem, "body", &record.body)?;
        let meta = serde_json::json!({
            "batch_id": record.batch_id,
            "record_id": id.0,
            "results": record.results,
            "quarantined_at": chrono::Utc::now().to_rfc3339(),
            "reason": reason,
            "body_file": body_path.file_name().map(|name| name.to_string_lossy()),
        });
        let text = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        let reason_path = write_unique(&qdir, &stem, "reason.json", &text)?;
        sync_dir(&qdir).map_err(io_err(&qdir, "sync the quarantine directory"))?;
        self.ack(id)?;
        self.quarantined += 1;
        tracing::warn!(message = "Batch quarantined.", record = id.0, batch_id = %record.batch_id, reason, path = %reason_path.display());
        Ok(reason_path)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            records: self.pending.len(),
            bytes: self.bytes,
            segments: self.segments.len(),
            quarantined: self.quarantined,
            corrupt_set_aside: self.corrupt_set_aside,
            max_bytes: self.limits.max_bytes,
        }
    }

    /// Bytes still available under `max_bytes`.
    pub fn free_bytes(&self) -> u64 {
        self.limits.max_bytes.saturating_sub(self.bytes)
    }

    /// Whether even an empty record in a new segment would be refused.
    pub fn is_full(&self) -> bool {
        self.free_bytes() < (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN) as u64
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The open-batch journal, where results wait until their batch is sealed.
    pub fn journal(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// The batches found in the journal at start, oldest first (once; empty afterwards): the
    /// batch that was open when the agent last stopped, and sealed ones that waited in memory.
    /// One whose id is already a pending record ([`Spool::holds_batch`]) was spooled just
    /// before the stop and must not be sealed again.
    pub fn take_open_batches(&mut self) -> Vec<OpenBatch> {
        std::mem::take(&mut self.open_batches)
    }

    /// Whether a pending record carries this batch id.
    pub fn holds_batch(&self, batch_id: Uuid) -> bool {
        self.pending.values().any(|l| l.header.batch_id == batch_id)
    }

    /// Stops appending to the current segment; deletes it if nothing in it is pending.
    fn retire_active(&mut self) {
        if let Some(active) = self.active.take() {
            if self
                .segments
                .get(&active.id)
                .is_some_and(|seg| seg.live == 0)
            {
                self.delete_segment(active.id);
            }
        }
    }

    fn start_segment(&mut self) -> Result<Active, SpoolError> {
        let id = self.next_segment;
        let name = segment_name(id);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let created =
            replace_atomically(&self.dir, &tmp, &path, &format::encode_segment_header(id));
        // Whatever happened, this number is not used again in this run.
        self.next_segment += 1;
        match created {
            Ok(file) => {
                self.segments.insert(
                    id,
                    Segment {
                        path,
                        size: SEGMENT_HEADER_LEN as u64,
                        live: 0,
                        seqs: None,
                    },
                );
                self.bytes += SEGMENT_HEADER_LEN as u64;
                Ok(Active { id, file })
            }
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                Err(SpoolError::Io {
                    path,
                    action: "create a segment",
                    source,
                })
            }
        }
    }

    /// Unlinks a segment none of whose records is pending. Failure is logged, not returned: the
    /// acks are already durable and the next open deletes the segment again.
    fn delete_segment(&mut self, id: u64) {
        let Some(segment) = self.segments.get(&id) else {
            return;
        };
        if let Err(error) = fs::remove_file(&segment.path) {
            tracing::warn!(message = "Could not delete an acknowledged spool segment.", path = %segment.path.display(), %error);
            return;
        }
        if let Err(error) = sync_dir(&self.dir) {
            tracing::warn!(message = "Could not sync the spool directory.", path = %self.dir.display(), %error);
        }
        if let Some(segment) = self.segments.remove(&id) {
            self.bytes = self.bytes.saturating_sub(segment.size);
            if let Some((first, last)) = segment.seqs {
                self.acked_in_live
                    .retain(|seq| !(first..=last).contains(seq));
            }
        }
        if self.active.as_ref().is_some_and(|active| active.id == id) {
            self.active = None;
        }
    }

    fn write_ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        if self.acks.is_none() {
            self.rewrite_ack_log()?;
        }
        let path = self.dir.join(ACKS);
        let Some(file) = self.acks.as_mut() else {
            return Err(SpoolError::Io {
                path,
                action: "open the ack log",
                source: io::Error::other("ack log not open"),
            });
        };
        let entry = format::encode_ack(AckEntry::Ack(seq));
        if let Err(source) = file.write_all(&entry).and_then(|()| file.sync_data()) {
            // A partial entry may be on disk: rewrite the whole log before the next ack.
            self.acks = None;
            return Err(SpoolError::Io {
                path,
                action: "append to the ack log",
                source,
            });
        }
        self.acks_entries += 1;
        Ok(())
    }

    /// Writes a fresh ack log (high-water mark + acks of records still in a segment) beside the
    /// old one, fsyncs it and renames it over the old one.
    fn rewrite_ack_log(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join(ACKS);
        let tmp = self.dir.join(ACKS_TMP);
        let mut buf = Vec::with_capacity((self.acked_in_live.len() + 1) * format::ACK_ENTRY_LEN);
        buf.extend_from_slice(&format::encode_ack(AckEntry::HighWater(self.next_seq)));
        for seq in &self.acked_in_live {
            buf.extend_from_slice(&format::encode_ack(AckEntry::Ack(*seq)));
        }
        replace_atomically(&self.dir, &tmp, &path, &buf)
            .map_err(io_err(&path, "rewrite the ack log"))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "open the ack log"))?;
        self.acks = Some(file);
        self.acks_entries = self.acked_in_live.len() + 1;
        Ok(())
    }

    /// Copies damaged bytes into `corrupt/` (fsync'd) and counts them.
    fn set_aside_bytes(
        &mut self,
        segment: &Path,
        offset: u64,
        bytes: &[u8],
    ) -> Result<PathBuf, SpoolError> {
        let path = save_corrupt_bytes(&self.dir, segment, offset, bytes)?;
        self.corrupt_set_aside += 1;
        Ok(path)
    }
}

/// `00000000000000000042.seg`: fixed width, so lexical order is numeric order.
fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The id in a segment file name, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn timestamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ").to_string()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `tmp`, fsyncs it, renames it over `path` and fsyncs `dir`: after a crash
/// `path` holds either its old content or all of `bytes`. Returns the file, open for writing at
/// its end.
pub(super) fn replace_atomically(
    dir: &Path,
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(tmp, path)?;
    sync_dir(dir)?;
    Ok(file)
}

/// Creates `dir/stem.ext` (or `dir/stem-N.ext` if taken), writes `bytes` and fsyncs the file.
fn write_unique(dir: &Path, stem: &str, ext: &str, bytes: &[u8]) -> Result<PathBuf, SpoolError> {
    let mut n = 0u32;
    loop {
        let name = if n == 0 {
            format!("{stem}.{ext}")
        } else {
            format!("{stem}-{n}.{ext}")
        };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(io_err(&path, "write a file"))?;
                return Ok(path);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
            Err(source) => {
                return Err(SpoolError::Io {
                    path,
                    action: "create a file",
                    source,
                })
            }
        }
    }
}

/// Copies damaged bytes of `segment` at `offset` into `corrupt/`, fsync'd.
fn save_corrupt_bytes(
    dir: &Path,
    segment: &Path,
    offset: u64,
    bytes: &[u8],
) -> Result<PathBuf, SpoolError> {
    let corrupt = dir.join(CORRUPT);
    let name = segment
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = format!("{}-{name}-at-{offset}", timestamp());
    let path = write_unique(&corrupt, &stem, "bin", bytes)?;
    sync_dir(&corrupt).map_err(io_err(&corrupt, "sync the corrupt directory"))?;
    Ok(path)
}
