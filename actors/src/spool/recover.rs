//! [`Spool::open`]: scan the directory, repair what a crash left, set damage aside.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::format::{self, AckEntry, Parsed, RecordHeader, SEGMENT_HEADER_LEN};
use super::{
    io_err, parse_segment_name, replace_atomically, save_corrupt_bytes, segment_name, sync_dir,
    timestamp, Journal, Location, Segment, Spool, SpoolError, SpoolLimits, ACKS, ACKS_TMP, CORRUPT,
    JOURNAL, JOURNAL_TMP, QUARANTINE,
};

/// What [`Spool::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files examined.
    pub segments_scanned: usize,
    /// Records pending after recovery.
    pub records: usize,
    /// Records found in segments that were already acknowledged (not returned).
    pub acked_skipped: usize,
    /// Segments deleted because all their records were acknowledged (or they were empty).
    pub segments_deleted: usize,
    /// Torn tails (partial last record of the newest segment) truncated.
    pub torn_tails: usize,
    /// Bytes removed by truncating torn tails.
    pub torn_bytes: u64,
    /// Damaged byte ranges inside segments set aside (each holds one or more damaged records).
    pub corrupt_records: usize,
    /// Segments with a bad header set aside whole.
    pub corrupt_segments: usize,
    /// Bytes set aside in `corrupt/`.
    pub corrupt_bytes: u64,
    /// Damaged ack-log entries skipped (their records, if any, will be sent again).
    pub corrupt_ack_entries: usize,
    /// Valid records whose seq had already been seen (ignored).
    pub duplicate_records: usize,
    /// `*.tmp` files left by an interrupted segment creation or ack-log compaction, removed.
    pub leftovers_removed: usize,
    /// Files in the spool directory that the spool does not know (left alone).
    pub foreign_files: Vec<PathBuf>,
    /// Files written into `corrupt/` by this recovery.
    pub set_aside: Vec<PathBuf>,
    /// Results found in the journal (the open batch, and batches that waited in memory) when
    /// the agent stopped.
    pub open_results: usize,
    /// The journal ended with a partial or damaged record (cut off).
    pub journal_torn: bool,
}

impl RecoveryReport {
    /// Damaged records and segments set aside.
    pub fn corrupt_set_aside(&self) -> usize {
        self.corrupt_records + self.corrupt_segments
    }

    /// Whether nothing had to be repaired or set aside.
    pub fn is_clean(&self) -> bool {
        self.torn_tails == 0
            && !self.journal_torn
            && self.corrupt_set_aside() == 0
            && self.corrupt_ack_entries == 0
            && self.duplicate_records == 0
    }
}

/// A segment after scanning (and repair): its size and its valid records in file order.
struct Scanned {
    size: u64,
    records: Vec<(u64, RecordHeader)>,
}

pub(super) fn open(dir: &Path, limits: SpoolLimits) -> Result<(Spool, RecoveryReport), SpoolError> {
    fs::create_dir_all(dir).map_err(io_err(dir, "create the spool directory"))?;
    for sub in [QUARANTINE, CORRUPT] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(io_err(&path, "create a directory"))?;
    }
    sync_dir(dir).map_err(io_err(dir, "sync the spool directory"))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = sync_dir(parent);
    }

    let mut report = RecoveryReport::default();
    let mut segment_ids = Vec::new();
    let entries = fs::read_dir(dir).map_err(io_err(dir, "list the spool directory"))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir, "list the spool directory"))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = parse_segment_name(&name) {
            segment_ids.push(id);
        } else if name == ACKS_TMP
            || name == JOURNAL_TMP
            || (name.ends_with(".seg.tmp") && path.is_file())
        {
            fs::remove_file(&path).map_err(io_err(&path, "remove a leftover file"))?;
            report.leftovers_removed += 1;
        } else if name != ACKS && name != QUARANTINE && name != CORRUPT && name != JOURNAL {
            tracing::warn!(message = "Unknown file in the spool directory left alone.", path = %path.display());
            report.foreign_files.push(path);
        }
    }
    segment_ids.sort_unstable();

    let (acked, high_water) = read_ack_log(dir, &mut report)?;
    let (journal, open_batches, journal_torn) = Journal::open(dir)?;
    report.journal_torn = journal_torn;
    report.open_results = open_batches.iter().map(|o| o.results.len()).sum();

    let mut spool = Spool {
        dir: dir.to_path_buf(),
        limits,
        segments: BTreeMap::new(),
        pending: BTreeMap::new(),
        acked_in_live: BTreeSet::new(),
        active: None,
        acks: None,
        acks_entries: 0,
        next_seq: 1,
        next_segment: segment_ids.last().map_or(1, |last| last.saturating_add(1)),
        bytes: 0,
        quarantined: count_files(&dir.join(QUARANTINE), ".reason.json")?,
        corrupt_set_aside: 0,
        journal,
        open_batches,
    };

    let mut max_seq = high_water.saturating_sub(1);
    if let Some(last) = acked.last() {
        max_seq = max_seq.max(*last);
    }
    let newest = segment_ids.last().copied();
    for id in segment_ids {
        report.segments_scanned += 1;
        let Some(scanned) = scan_segment(dir, id, Some(id) == newest, &mut report)? else {
            continue;
        };
        let mut segment = Segment {
            path: dir.join(segment_name(id)),
            size: scanned.size,
            live: 0,
            seqs: None,
        };
        for (offset, header) in scanned.records {
            let seq = header.seq;
            if spool.pending.contains_key(&seq) || spool.acked_in_live.contains(&seq) {
                tracing::warn!(message = "Spool record with a sequence number already seen ignored.", path = %segment.path.display(), offset, record = seq);
                report.duplicate_records += 1;
                continue;
            }
            max_seq = max_seq.max(seq);
            segment.seqs = Some(match segment.seqs {
                Some((first, last)) => (first.min(seq), last.max(seq)),
                None => (seq, seq),
            });
            if acked.contains(&seq) {
                spool.acked_in_live.insert(seq);
                report.acked_skipped += 1;
            } else {
                segment.live += 1;
                spool.pending.insert(
                    seq,
                    Location {
                        segment: id,
                        offset,
                        header,
                    },
                );
            }
        }
        spool.bytes += segment.size;
        spool.segments.insert(id, segment);
    }
    spool.next_seq = max_seq.saturating_add(1).max(1);

    let done: Vec<u64> = spool
        .segments
        .iter()
        .filter(|(_, segment)| segment.live == 0)
        .map(|(id, _)| *id)
        .collect();
    for id in done {
        spool.delete_segment(id);
        if !spool.segments.contains_key(&id) {
            report.segments_deleted += 1;
        }
    }
    spool.rewrite_ack_log()?;
    spool.corrupt_set_aside = count_files(&dir.join(CORRUPT), "")?;
    report.records = spool.pending.len();

    if report.is_clean() {
        tracing::info!(message = "Spool opened.", path = %dir.display(), records = report.records, open_results = report.open_results, segments = spool.segments.len(), bytes = spool.bytes);
    } else {
        tracing::warn!(message = "Spool opened after repair.", path = %dir.display(), records = report.records, torn_tails = report.torn_tails, torn_bytes = report.torn_bytes, corrupt_records = report.corrupt_records, corrupt_segments = report.corrupt_segments, corrupt_bytes = report.corrupt_bytes, corrupt_ack_entries = report.corrupt_ack_entries, duplicates = report.duplicate_records);
    }
    Ok((spool, report))
}

/// Reads the ack log: the acknowledged seqs and the highest high-water mark.
fn read_ack_log(
    dir: &Path,
    report: &mut RecoveryReport,
) -> Result<(BTreeSet<u64>, u64), SpoolError> {
    let path = dir.join(ACKS);
    let buf = match fs::read(&path) {
        Ok(buf) => buf,
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(SpoolError::Io {
                path,
                action: "read the ack log",
                source,
            })
        }
    };
    let mut acked = BTreeSet::new();
    let mut high_water = 0u64;
    let mut pos = 0usize;
    let mut damaged = false;
    while pos + format::ACK_ENTRY_LEN <= buf.len() {
        match format::decode_ack(&buf[pos..]) {
            Some(AckEntry::Ack(seq)) => {
                acked.insert(seq);
                pos += format::ACK_ENTRY_LEN;
            }
            Some(AckEntry::HighWater(seq)) => {
                high_water = high_water.max(seq);
                pos += format::ACK_ENTRY_LEN;
            }
            None => {
                damaged = true;
                report.corrupt_ack_entries += 1;
                match (pos + 1..=buf.len() - format::ACK_ENTRY_LEN)
                    .find(|at| format::decode_ack(&buf[*at..]).is_some())
                {
                    Some(next) => pos = next,
                    None => break,
                }
            }
        }
    }
    if damaged {
        let saved = save_corrupt_bytes(dir, &path, 0, &buf)?;
        tracing::warn!(message = "Damaged spool ack-log entries skipped; the records they acknowledged will be sent again.", path = %path.display(), entries = report.corrupt_ack_entries, set_aside = %saved.display());
        report.set_aside.push(saved);
    }
    // A partial last entry (torn write) is dropped by the rewrite that follows.
    Ok((acked, high_water))
}

/// Scans one segment, repairing it on disk: truncates a torn tail, sets aside damaged ranges
/// (rewriting the segment without them) or the whole segment if its header is bad. Returns
/// `None` when the segment is gone (set aside or empty).
fn scan_segment(
    dir: &Path,
    id: u64,
    newest: bool,
    report: &mut RecoveryReport,
) -> Result<Option<Scanned>, SpoolError> {
    let path = dir.join(segment_name(id));
    let buf = fs::read(&path).map_err(io_err(&path, "read a segment"))?;
    if buf.is_empty() {
        fs::remove_file(&path).map_err(io_err(&path, "remove an empty segment"))?;
        sync_dir(dir).map_err(io_err(dir, "sync the spool directory"))?;
        report.segments_deleted += 1;
        return Ok(None);
    }
    if let Err(why) = format::check_segment_header(&buf, id) {
        set_aside_segment(dir, &path, &why, buf.len() as u64, report)?;
        return Ok(None);
    }

    let mut records: Vec<(usize, RecordHeader)> = Vec::new();
    let mut bad: Vec<Range<usize>> = Vec::new();
    let mut end = buf.len();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < buf.len() {
        let parsed = format::parse_record(&buf[pos..]);
        if let Parsed::Valid(header) = parsed {
            records.push((pos, header));
            pos += header.total_len() as usize;
            continue;
        }
        match format::find_next_record(&buf, pos + 1) {
            Some(next) => {
                bad.push(pos..next);
                pos = next;
            }
            None => {
                let torn =
                    newest && (parsed == Parsed::Incomplete || buf[pos..].iter().all(|b| *b == 0));
                if torn {
                    tracing::warn!(message = "Torn tail of the newest spool segment truncated.", path = %path.display(), offset = pos, bytes = buf.len() - pos);
                    report.torn_tails += 1;
                    report.torn_bytes += (buf.len() - pos) as u64;
                } else {
                    bad.push(pos..buf.len());
                }
                end = pos;
                break;
            }
        }
    }

    for range in &bad {
        let saved = save_corrupt_bytes(dir, &path, range.start as u64, &buf[range.clone()])?;
        tracing::warn!(message = "Damaged spool record set aside.", path = %path.display(), offset = range.start, bytes = range.len(), set_aside = %saved.display());
        report.corrupt_records += 1;
        report.corrupt_bytes += range.len() as u64;
        report.set_aside.push(saved);
    }

    // A damaged range that ends before the end of the file sits between valid records.
    let cut_in_middle = bad.iter().any(|range| range.end < buf.len());
    if !cut_in_middle {
        // Nothing to cut out except possibly the tail: truncate in place.
        if end < buf.len() {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path, "open a segment"))?;
            file.set_len(end as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_err(&path, "truncate a segment"))?;
        }
        return Ok(Some(Scanned {
            size: end as u64,
            records: records
                .into_iter()
                .map(|(offset, header)| (offset as u64, header))
                .collect(),
        }));
    }

    // Rewrite the segment with only its valid records, atomically.
    let mut out = Vec::with_capacity(end);
    out.extend_from_slice(&buf[..SEGMENT_HEADER_LEN]);
    let mut moved = Vec::with_capacity(records.len());
    for (offset, header) in records {
        moved.push((out.len() as u64, header));
        out.extend_from_slice(&buf[offset..offset + header.total_len() as usize]);
    }
    let tmp = dir.join(format!("{}.tmp", segment_name(id)));
    replace_atomically(dir, &tmp, &path, &out).map_err(io_err(
        &path,
        "rewrite a segment without its damaged records",
    ))?;
    Ok(Some(Scanned {
        size: out.len() as u64,
        records: moved,
    }))
}

/// Moves a whole segment into `corrupt/`.
fn set_aside_segment(
    dir: &Path,
    path: &Path,
    why: &str,
    len: u64,
    report: &mut RecoveryReport,
) -> Result<(), SpoolError> {
    let corrupt = dir.join(CORRUPT);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = format!("{}-{name}", timestamp());
    let mut target = corrupt.join(&stem);
    let mut n = 0u32;
    while target.exists() {
        n += 1;
        target = corrupt.join(format!("{stem}-{n}"));
    }
    fs::rename(path, &target).map_err(io_err(path, "move a damaged segment aside"))?;
    sync_dir(&corrupt).map_err(io_err(&corrupt, "sync the corrupt directory"))?;
    sync_dir(dir).map_err(io_err(dir, "sync the spool directory"))?;
    tracing::warn!(message = "Damaged spool segment set aside.", path = %path.display(), reason = why, set_aside = %target.display());
    report.corrupt_segments += 1;
    report.corrupt_bytes += len;
    report.set_aside.push(target);
    Ok(())
}

/// Files in `dir` whose name ends with `suffix`.
fn count_files(dir: &Path, suffix: &str) -> Result<u64, SpoolError> {
    let mut count = 0;
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list a directory"))? {
        let entry = entry.map_err(io_err(dir, "list a directory"))?;
        if entry.file_name().to_string_lossy().ends_with(suffix) {
            count += 1;
        }
    }
    Ok(count)
}
