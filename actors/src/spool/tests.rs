//! Tests of the spool: behaviour, recovery from damage, and a model-based crash test.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::format::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::*;

fn limits(segment_bytes: u64) -> SpoolLimits {
    SpoolLimits {
        max_bytes: DEFAULT_MAX_BYTES,
        segment_bytes,
    }
}

fn body(n: u128) -> Vec<u8> {
    format!(
        "{{\"batch\":{n},\"results\":[\"{}\"]}}",
        "x".repeat((n % 7) as usize)
    )
    .into_bytes()
}

fn append_n(spool: &mut Spool, range: std::ops::Range<u128>) -> Vec<RecordId> {
    range
        .map(|n| {
            let body = body(n);
            spool
                .append(&NewRecord {
                    batch_id: Uuid::from_u128(n),
                    results: n as u32,
                    body: &body,
                })
                .unwrap()
        })
        .collect()
}

/// Every pending record, read back with its body: (batch number, body ok).
fn drain_numbers(spool: &mut Spool) -> Vec<u128> {
    let ids: Vec<RecordId> = spool.iter_pending().map(|p| p.id).collect();
    ids.into_iter()
        .map(|id| {
            let record = spool.read(id).unwrap();
            let n = record.batch_id.as_u128();
            assert_eq!(record.body, body(n), "body of batch {n}");
            assert_eq!(record.results, n as u32);
            n
        })
        .collect()
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn flip(path: &Path, at: u64, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= mask;
    fs::write(path, bytes).unwrap();
}

fn location(spool: &Spool, id: RecordId) -> (PathBuf, u64, u64) {
    let loc = spool.pending[&id.get()];
    (
        spool.segments[&loc.segment].path.clone(),
        loc.offset,
        loc.header.total_len(),
    )
}

#[test]
fn append_ack_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let (mut spool, report) = Spool::open(&dir, SpoolLimits::default()).unwrap();
    assert!(report.is_clean());
    assert!(spool.is_empty());
    let ids = append_n(&mut spool, 0..3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        spool.peek_oldest().unwrap().unwrap().batch_id,
        Uuid::from_u128(0)
    );
    spool.ack(ids[0]).unwrap();
    assert!(matches!(
        spool.ack(ids[0]),
        Err(SpoolError::NotPending { .. })
    ));
    drop(spool);

    let (mut spool, report) = Spool::open(&dir, SpoolLimits::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, 2);
    assert_eq!(report.acked_skipped, 1);
    assert_eq!(
        spool.iter_pending().map(|p| p.id).collect::<Vec<_>>(),
        ids[1..]
    );
    let oldest = spool.peek_oldest().unwrap().unwrap();
    assert_eq!(oldest.id, ids[1]);
    assert_eq!(oldest.clone().into_sealed().body, body(1));
    spool.ack(ids[1]).unwrap();
    spool.ack(ids[2]).unwrap();
    assert_eq!(spool.peek_oldest().unwrap(), None);
    // Not the segment being written in this run: deleted as soon as all of it is acknowledged.
    assert_eq!(spool.stats().segments, 0);
    drop(spool);

    let (mut spool, report) = Spool::open(&dir, SpoolLimits::default()).unwrap();
    assert!(report.is_clean());
    assert_eq!(report.records, 0);
    assert_eq!(spool.stats().segments, 0);
    assert_eq!(spool.stats().bytes, 0);
    assert!(segment_files(&dir).is_empty());
    // Sequence numbers are never reused, even after every segment was deleted.
    let next = append_n(&mut spool, 10..11)[0];
    assert!(next > ids[2], "{next} after {}", ids[2]);
}

#[test]
fn order_kept_across_many_segments_and_name_widths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Every record gets its own segment.
    let (mut spool, _) = Spool::open(dir, limits(1)).unwrap();
    append_n(&mut spool, 0..120);
    assert_eq!(spool.stats().segments, 120);
    let names = segment_files(dir);
    assert_eq!(names.len(), 120);
    for want in [9u64, 10, 99, 100, 120] {
        assert!(names.contains(&segment_name(want)), "{want}");
    }
    let numeric: Vec<u64> = names
        .iter()
        .map(|n| parse_segment_name(n).unwrap())
        .collect();
    assert!(numeric.windows(2).all(|w| w[0] < w[1]), "lexical = numeric");
    drop(spool);

    let (mut spool, report) = Spool::open(dir, limits(1)).unwrap();
    assert!(report.is_clean());
    assert_eq!(drain_numbers(&mut spool), (0..120).collect::<Vec<_>>());
    let ids: Vec<RecordId> = spool.iter_pending().map(|p| p.id).collect();
    for id in &ids[..50] {
        spool.ack(*id).unwrap();
    }
    assert_eq!(spool.stats().segments, 70);
    drop(spool);

    let (mut spool, _) = Spool::open(dir, limits(1)).unwrap();
    append_n(&mut spool, 120..125);
    drop(spool);
    let (mut spool, report) = Spool::open(dir, limits(1)).unwrap();
    assert!(report.is_clean());
    assert_eq!(drain_numbers(&mut spool), (50..125).collect::<Vec<_>>());
}

#[test]
fn segments_rotate_by_size() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(tmp.path(), limits(400)).unwrap();
    append_n(&mut spool, 0..30);
    let stats = spool.stats();
    assert!(stats.segments > 3, "{stats:?}");
    for name in segment_files(tmp.path()) {
        let len = fs::metadata(tmp.path().join(name)).unwrap().len();
        assert!(len <= 400, "{len}");
    }
    assert_eq!(drain_numbers(&mut spool), (0..30).collect::<Vec<_>>());
}

#[test]
fn torn_tail_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut spool, _) = Spool::open(dir, SpoolLimits::default()).unwrap();
    append_n(&mut spool, 0..3);
    let segment = spool.segments.values().next().unwrap().path.clone();
    drop(spool);
    let good_len = fs::metadata(&segment).unwrap().len();
    // A crash in the middle of the next append: part of a record reached the file.
    let partial = format::encode_record(99, Uuid::from_u128(3), 3, &body(3));
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&partial[..partial.len() - 5]).unwrap();
    drop(file);

    let (mut spool, report) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert_eq!(report.torn_tails, 1, "{report:?}");
    assert_eq!(report.torn_bytes, partial.len() as u64 - 5);
    assert_eq!(report.corrupt_set_aside(), 0);
    assert_eq!(fs::metadata(&segment).unwrap().len(), good_len);
    assert_eq!(drain_numbers(&mut spool), vec![0, 1, 2]);
    // The torn record's seq is not reused by mistake either way; new appends work.
    append_n(&mut spool, 3..4);
    drop(spool);
    let (mut spool, report) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(drain_numbers(&mut spool), vec![0, 1, 2, 3]);
}

#[test]
fn zero_filled_tail_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(tmp.path(), SpoolLimits::default()).unwrap();
    append_n(&mut spool, 0..2);
    let segment = spool.segments.values().next().unwrap().path.clone();
    drop(spool);
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[0u8; 100]).unwrap();
    drop(file);
    let (mut spool, report) = Spool::open(tmp.path(), SpoolLimits::default()).unwrap();
    assert_eq!(report.torn_tails, 1);
    assert_eq!(report.corrupt_set_aside(), 0);
    assert_eq!(drain_numbers(&mut spool), vec![0, 1]);
}

/// Flips one byte at `at` (relative to the middle record) and checks that only the middle
/// record is lost, and that it is set aside exactly once.
fn flip_middle_record(at: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut spool, _) = Spool::open(dir, SpoolLimits::default()).unwrap();
    let ids = append_n(&mut spool, 0..5);
    let (segment, offset, _) = location(&spool, ids[2]);
    drop(spool);
    flip(&segment, offset + at, 0x5A);

    let (mut spool, report) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert_eq!(report.corrupt_records, 1, "at {at}: {report:?}");
    assert_eq!(report.torn_tails, 0);
    assert_eq!(report.set_aside.len(), 1);
    assert_eq!(files_in(&dir.join(CORRUPT)).len(), 1);
    assert_eq!(spool.stats().corrupt_set_aside, 1);
    assert_eq!(drain_numbers(&mut spool), vec![0, 1, 3, 4]);
    drop(spool);

    // The segment was rewritten without the damage: nothing new is set aside.
    let (mut spool, report) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(files_in(&dir.join(CORRUPT)).len(), 1);
    assert_eq!(drain_numbers(&mut spool), vec![0, 1, 3, 4]);
    // Acks keyed by seq still work after the rewrite.
    spool.ack(ids[3]).unwrap();
    drop(spool);
    let (mut spool, _) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert_eq!(drain_numbers(&mut spool), vec![0, 1, 4]);
}

#[test]
fn flipped_byte_in_body_sets_aside_that_record_only() {
    flip_middle_record(RECORD_HEADER_LEN as u64 + 3);
}

#[test]
fn flipped_byte_in_length_sets_aside_that_record_only() {
    flip_middle_record(6);
}

#[test]
fn flipped_byte_in_magic_sets_aside_that_record_only() {
    flip_middle_record(0);
}

#[test]
fn flipped_byte_in_batch_id_sets_aside_that_record_only() {
    flip_middle_record(25);
}

#[test]
fn bad_segment_header_sets_aside_the_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut spool, _) = Spool::open(dir, limits(1)).unwrap();
    append_n(&mut spool, 0..3);
    drop(spool);
    let names = segment_files(dir);
    flip(&dir.join(&names[1]), 3, 0xFF);

    let (mut spool, report) = Spool::open(dir, limits(1)).unwrap();
    assert_eq!(report.corrupt_segments, 1, "{report:?}");
    assert_eq!(drain_numbers(&mut spool), vec![0, 2]);
    assert!(!dir.join(&names[1]).exists());
    let corrupt = files_in(&dir.join(CORRUPT));
    assert_eq!(corrupt.len(), 1);
    assert!(corrupt[0].to_string_lossy().ends_with(&names[1]));
}

#[test]
fn garbage_files_in_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut spool, _) = Spool::open(dir, SpoolLimits::default()).unwrap();
    append_n(&mut spool, 0..2);
    drop(spool);
    fs::write(dir.join("notes.txt"), b"not ours").unwrap();
    fs::write(dir.join("12.seg"), b"wrong width").unwrap();
    fs::write(dir.join(segment_name(7)), b"garbage with a segment's name").unwrap();
    fs::write(dir.join(segment_name(8)), b"").unwrap();
    fs::write(dir.join(format!("{}.tmp", segment_name(9))), b"LUMSPO").unwrap();
    fs::write(dir.join(ACKS_TMP), b"half a compaction").unwrap();

    let (mut spool, report) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert_eq!(report.corrupt_segments, 1, "{report:?}");
    assert_eq!(report.leftovers_removed, 2);
    assert_eq!(report.foreign_files.len(), 2);
    assert!(
        dir.join("notes.txt").exists(),
        "foreign files are left alone"
    );
    assert!(!dir.join(segment_name(8)).exists(), "empty segment removed");
    assert_eq!(drain_numbers(&mut spool), vec![0, 1]);
    // New segments are numbered after the highest one seen (8).
    append_n(&mut spool, 2..3);
    assert!(segment_files(dir).contains(&segment_name(9)));
    drop(spool);
    let (mut spool, report) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert!(report.is_clean());
    assert_eq!(drain_numbers(&mut spool), vec![0, 1, 2]);
}

#[test]
fn garbage_ack_log_does_not_stop_the_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut spool, _) = Spool::open(dir, SpoolLimits::default()).unwrap();
    let ids = append_n(&mut spool, 0..4);
    spool.ack(ids[0]).unwrap();
    spool.ack(ids[1]).unwrap();
    drop(spool);
    // The log is: high-water mark, ack 0, ack 1. Damage "ack 0".
    flip(&dir.join(ACKS), format::ACK_ENTRY_LEN as u64 + 5, 0x01);
    let (mut spool, report) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert_eq!(report.corrupt_ack_entries, 1, "{report:?}");
    // The record whose ack was lost comes back (sent again; the API de-duplicates by batch_id).
    assert_eq!(drain_numbers(&mut spool), vec![0, 2, 3]);
    drop(spool);

    fs::write(dir.join(ACKS), b"complete garbage, not an ack log at all").unwrap();
    let (mut spool, report) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert!(report.corrupt_ack_entries >= 1);
    assert_eq!(drain_numbers(&mut spool), vec![0, 1, 2, 3]);
}

#[test]
fn full_spool_refuses_new_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let one = (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + body(0).len()) as u64;
    // body(n) is body(0) plus n % 7 bytes.
    let limits = SpoolLimits {
        max_bytes: 3 * one + 3,
        segment_bytes: one,
    };
    let (mut spool, _) = Spool::open(dir, limits).unwrap();
    let ids = append_n(&mut spool, 0..3);
    assert!(spool.is_full());
    let refused = spool.append(&NewRecord {
        batch_id: Uuid::from_u128(3),
        results: 1,
        body: &body(0),
    });
    let error = refused.unwrap_err();
    assert!(matches!(error, SpoolError::Full { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("is full") && text.contains(&dir.display().to_string()),
        "{text}"
    );
    // Nothing already spooled was dropped.
    assert_eq!(drain_numbers(&mut spool), vec![0, 1, 2]);
    // Acknowledging frees the space.
    spool.ack(ids[0]).unwrap();
    assert!(!spool.is_full());
    append_n(&mut spool, 7..8);
    assert_eq!(drain_numbers(&mut spool), vec![1, 2, 7]);
    drop(spool);
    // Reopening with a smaller bound keeps everything and refuses new records.
    let (mut spool, _) = Spool::open(
        dir,
        SpoolLimits {
            max_bytes: one,
            ..limits
        },
    )
    .unwrap();
    assert!(spool.is_full());
    assert_eq!(drain_numbers(&mut spool), vec![1, 2, 7]);
}

#[test]
fn full_when_only_acked_records_remain_in_the_current_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let one = (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + body(0).len()) as u64;
    let limits = SpoolLimits {
        max_bytes: one + 10,
        segment_bytes: DEFAULT_SEGMENT_BYTES,
    };
    let (mut spool, _) = Spool::open(tmp.path(), limits).unwrap();
    for n in 0..5 {
        let id = append_n(&mut spool, n..n + 1)[0];
        spool.ack(id).unwrap();
    }
    assert_eq!(spool.stats().segments, 1);
}

#[test]
fn too_large_record_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(tmp.path(), SpoolLimits::default()).unwrap();
    let big = vec![b'x'; MAX_RECORD_BODY + 1];
    let error = spool
        .append(&NewRecord {
            batch_id: Uuid::nil(),
            results: 1,
            body: &big,
        })
        .unwrap_err();
    assert!(matches!(error, SpoolError::TooLarge { .. }), "{error}");
}

#[test]
fn quarantine_moves_the_batch_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut spool, _) = Spool::open(dir, SpoolLimits::default()).unwrap();
    let ids = append_n(&mut spool, 0..2);
    let reason_path = spool
        .quarantine(ids[0], "HTTP 422: results[0].status: unknown variant")
        .unwrap();
    assert_eq!(spool.stats().quarantined, 1);
    let reason: serde_json::Value =
        serde_json::from_slice(&fs::read(&reason_path).unwrap()).unwrap();
    assert_eq!(
        reason["reason"],
        "HTTP 422: results[0].status: unknown variant"
    );
    assert_eq!(reason["batch_id"], Uuid::from_u128(0).to_string());
    let body_file = dir
        .join(QUARANTINE)
        .join(reason["body_file"].as_str().unwrap());
    assert_eq!(fs::read(body_file).unwrap(), body(0));
    assert!(matches!(
        spool.quarantine(ids[0], "again"),
        Err(SpoolError::NotPending { .. })
    ));
    drop(spool);
    let (mut spool, _) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert_eq!(spool.stats().quarantined, 1);
    assert_eq!(drain_numbers(&mut spool), vec![1]);
}

#[test]
fn damage_found_when_reading_is_set_aside_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut spool, _) = Spool::open(dir, SpoolLimits::default()).unwrap();
    let ids = append_n(&mut spool, 0..3);
    let (segment, offset, _) = location(&spool, ids[0]);
    flip(&segment, offset + RECORD_HEADER_LEN as u64, 0x20);
    let oldest = spool.peek_oldest().unwrap().unwrap();
    assert_eq!(oldest.id, ids[1]);
    assert_eq!(spool.stats().corrupt_set_aside, 1);
    assert_eq!(spool.stats().records, 2);
    assert!(matches!(
        spool.read(ids[0]),
        Err(SpoolError::NotPending { .. })
    ));
    drop(spool);
    let (mut spool, _) = Spool::open(dir, SpoolLimits::default()).unwrap();
    assert_eq!(drain_numbers(&mut spool), vec![1, 2]);
}

#[test]
fn sealed_batch_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(tmp.path(), SpoolLimits::default()).unwrap();
    let sealed = SealedBatch {
        batch_id: Uuid::new_v4(),
        results: 12,
        body: b"{\"results\":[]}".to_vec(),
    };
    spool.append(&NewRecord::from(&sealed)).unwrap();
    assert_eq!(spool.peek_oldest().unwrap().unwrap().into_sealed(), sealed);
}

#[test]
fn record_format_round_trip_and_detection() {
    let id = Uuid::from_u128(0xABCDEF);
    let bytes = format::encode_record(42, id, 7, b"hello");
    match format::parse_record(&bytes) {
        format::Parsed::Valid(h) => {
            assert_eq!((h.seq, h.batch_id, h.results, h.body_len), (42, id, 7, 5));
        }
        other => panic!("{other:?}"),
    }
    for cut in 0..bytes.len() {
        assert_eq!(
            format::parse_record(&bytes[..cut]),
            format::Parsed::Incomplete,
            "cut {cut}"
        );
    }
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        assert!(
            !matches!(format::parse_record(&damaged), format::Parsed::Valid(_)),
            "flip at {at} undetected"
        );
    }
    assert_eq!(
        format::check_segment_header(&format::encode_segment_header(5), 5),
        Ok(())
    );
    assert!(format::check_segment_header(&format::encode_segment_header(5), 6).is_err());
}

#[test]
fn ack_log_is_compacted() {
    let tmp = fast_tempdir();
    let dir = tmp.path();
    let (mut spool, _) = Spool::open(dir, limits(1)).unwrap();
    let mut last = None;
    for n in 0..(ACK_COMPACT_MIN as u128 + 200) {
        let id = append_n(&mut spool, n..n + 1)[0];
        spool.ack(id).unwrap();
        last = Some(id);
    }
    let len = fs::metadata(dir.join(ACKS)).unwrap().len();
    assert!(
        len < 400 * format::ACK_ENTRY_LEN as u64,
        "ack log not compacted: {len} bytes"
    );
    let kept = append_n(&mut spool, 9000..9001)[0];
    drop(spool);
    let (mut spool, report) = Spool::open(dir, limits(1)).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(drain_numbers(&mut spool), vec![9000]);
    assert!(kept > last.unwrap());
    assert!(append_n(&mut spool, 9001..9002)[0] > kept);
}

/// xorshift64*: a small deterministic PRNG for the model test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Model {
    dir: PathBuf,
    limits: SpoolLimits,
    spool: Option<Spool>,
    queue: VecDeque<(RecordId, Uuid, Vec<u8>)>,
    next_batch: u128,
}

impl Model {
    fn spool(&mut self) -> &mut Spool {
        self.spool.as_mut().unwrap()
    }

    fn reopen(&mut self) -> RecoveryReport {
        self.spool = None;
        let (spool, report) = Spool::open(&self.dir, self.limits).unwrap();
        self.spool = Some(spool);
        report
    }

    fn append(&mut self, rng: &mut Rng) -> (RecordId, Uuid, Vec<u8>) {
        let len = rng.below(120) as usize;
        let body: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        self.next_batch += 1;
        let batch_id = Uuid::from_u128(self.next_batch);
        let id = self
            .spool()
            .append(&NewRecord {
                batch_id,
                results: len as u32,
                body: &body,
            })
            .unwrap();
        (id, batch_id, body)
    }

    fn check_pending(&self, context: &str) {
        let spool = self.spool.as_ref().unwrap();
        let got: Vec<(RecordId, Uuid)> = spool.iter_pending().map(|p| (p.id, p.batch_id)).collect();
        let want: Vec<(RecordId, Uuid)> = self.queue.iter().map(|(id, b, _)| (*id, *b)).collect();
        assert_eq!(got, want, "{context}");
        assert_eq!(spool.stats().records, self.queue.len(), "{context}");
    }

    fn check_bodies(&mut self, context: &str) {
        let want = self.queue.clone();
        for (id, batch_id, body) in want {
            let record = self.spool().read(id).unwrap();
            assert_eq!(
                (record.batch_id, &record.body),
                (batch_id, &body),
                "{context}"
            );
        }
    }
}

/// A temporary directory on tmpfs when there is one: these tests simulate crashes (drop, then
/// cut files), so real fsyncs would only cost time.
fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

fn model_run(seed: u64, steps: usize) {
    let tmp = fast_tempdir();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let limits = SpoolLimits {
        max_bytes: DEFAULT_MAX_BYTES,
        segment_bytes: 200 + rng.below(400),
    };
    let mut m = Model {
        dir: tmp.path().to_path_buf(),
        limits,
        spool: None,
        queue: VecDeque::new(),
        next_batch: 0,
    };
    m.reopen();
    for step in 0..steps {
        let op = rng.below(100);
        let context = format!("seed {seed} step {step} op {op}");
        match op {
            0..=39 => {
                let record = m.append(&mut rng);
                m.queue.push_back(record);
            }
            40..=59 if !m.queue.is_empty() => {
                let (id, _, _) = m.queue.pop_front().unwrap();
                m.spool().ack(id).unwrap();
            }
            60..=64 if !m.queue.is_empty() => {
                let at = rng.below(m.queue.len() as u64) as usize;
                let (id, _, _) = m.queue.remove(at).unwrap();
                m.spool().ack(id).unwrap();
            }
            65..=66 if !m.queue.is_empty() => {
                let at = rng.below(m.queue.len() as u64) as usize;
                let (id, _, _) = m.queue.remove(at).unwrap();
                m.spool().quarantine(id, "HTTP 400").unwrap();
            }
            67..=73 => {
                // Clean reopen (every change was already fsync'd: drop is all a close does).
                let report = m.reopen();
                assert!(report.is_clean(), "{context}: {report:?}");
            }
            74..=81 => {
                // Crash in the middle of an append: only a prefix of the record reached the file.
                let record = m.append(&mut rng);
                let (segment, offset, len) = location(m.spool.as_ref().unwrap(), record.0);
                m.spool = None;
                let cut = offset + rng.below(len + 1);
                OpenOptions::new()
                    .write(true)
                    .open(&segment)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
                let whole = cut == offset + len;
                if whole {
                    m.queue.push_back(record);
                }
                let report = m.reopen();
                let torn = cut > offset && !whole;
                assert_eq!(
                    report.torn_tails,
                    usize::from(torn),
                    "{context}: {report:?}"
                );
                assert_eq!(report.corrupt_set_aside(), 0, "{context}: {report:?}");
            }
            82..=88 if !m.queue.is_empty() => {
                // Crash in the middle of an ack: only a prefix of the ack entry reached the log.
                let at = rng.below(m.queue.len() as u64) as usize;
                let (id, _, _) = m.queue[at].clone();
                let acks = m.dir.join(ACKS);
                let before = fs::metadata(&acks).unwrap().len();
                let segments_before = m.spool().stats().segments;
                m.spool().ack(id).unwrap();
                let after = fs::metadata(&acks).unwrap().len();
                let segments_after = m.spool().stats().segments;
                m.spool = None;
                // Tear only a plain append (no compaction, no segment unlinked after it: a
                // real crash cannot undo an ack whose segment is already gone).
                let tearable = after == before + format::ACK_ENTRY_LEN as u64
                    && segments_after == segments_before;
                let cut = if tearable {
                    before + rng.below(format::ACK_ENTRY_LEN as u64 + 1)
                } else {
                    after
                };
                OpenOptions::new()
                    .write(true)
                    .open(&acks)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
                if cut == after {
                    m.queue.remove(at);
                }
                let report = m.reopen();
                assert_eq!(report.corrupt_set_aside(), 0, "{context}: {report:?}");
            }
            89..=92 if !m.queue.is_empty() => {
                // Bit rot in a random pending record: that record alone is lost.
                let at = rng.below(m.queue.len() as u64) as usize;
                let (id, _, _) = m.queue.remove(at).unwrap();
                let (segment, offset, len) = location(m.spool.as_ref().unwrap(), id);
                m.spool = None;
                flip(&segment, offset + rng.below(len), 1 + rng.below(255) as u8);
                let report = m.reopen();
                assert!(
                    report.corrupt_records + report.torn_tails == 1,
                    "{context}: {report:?}"
                );
            }
            _ => {
                let front = m.queue.front().map(|(id, _, body)| (*id, body.clone()));
                let got = m.spool().peek_oldest().unwrap().map(|r| (r.id, r.body));
                assert_eq!(got, front, "{context}");
            }
        }
        m.check_pending(&context);
    }
    let report = m.reopen();
    assert!(report.is_clean(), "seed {seed} end: {report:?}");
    m.check_pending(&format!("seed {seed} end"));
    m.check_bodies(&format!("seed {seed} end"));
    // Drain everything: the spool ends empty and without segments.
    while let Some(record) = m.spool().peek_oldest().unwrap() {
        let (id, _, _) = m.queue.pop_front().unwrap();
        assert_eq!(record.id, id);
        m.spool().ack(id).unwrap();
    }
    assert!(m.queue.is_empty());
    m.reopen();
    assert_eq!(m.spool().stats().segments, 0, "seed {seed}");
}

/// `LUUMEN_SPOOL_MODEL_SEEDS=N` runs N seeds instead of 40 (for a longer soak).
#[test]
fn model_random_operations_and_crashes() {
    let seeds = std::env::var("LUUMEN_SPOOL_MODEL_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40u64);
    for seed in 1..=seeds {
        model_run(seed, 300);
    }
}

#[test]
fn the_open_batch_comes_back_once_and_is_recognised_when_already_sealed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let id = Uuid::new_v4();
    {
        let (mut spool, report) = Spool::open(dir.path(), limits(1 << 20)).expect("open");
        assert_eq!(report.open_results, 0);
        spool.journal().append(id, b"{\"r\":1}").expect("append");
        spool.journal().sync().expect("sync");
    }
    {
        let (mut spool, report) = Spool::open(dir.path(), limits(1 << 20)).expect("reopen");
        assert_eq!(report.open_results, 1);
        assert!(report.is_clean());
        let open = spool.take_open_batches();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].batch_id, id);
        assert!(spool.take_open_batches().is_empty(), "taken once");
        assert!(!spool.holds_batch(id));
        // Sealed into the spool, then the process dies before the journal is cleared.
        spool
            .append(&NewRecord {
                batch_id: id,
                results: 1,
                body: b"{\"batch\":1}",
            })
            .expect("append");
    }
    let (mut spool, _) = Spool::open(dir.path(), limits(1 << 20)).expect("reopen again");
    let open = spool.take_open_batches();
    assert_eq!(open.len(), 1, "still in the journal");
    assert!(spool.holds_batch(open[0].batch_id), "recognised as sealed");
    assert!(!dir.path().join("open.journal.tmp").exists());
}
