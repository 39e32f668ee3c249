//! The on-disk encoding: segment headers, records and ack-log entries. Pure: no I/O.
//!
//! All integers are little-endian. Checksums are CRC-32 (IEEE, as in zlib/gzip) computed with
//! `crc32fast`.

use uuid::Uuid;

/// First bytes of every segment file.
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"LUMSPOOL";
/// The segment format version this code writes and reads.
pub(super) const FORMAT_VERSION: u32 = 1;
/// `magic[8] version u32 segment_id u64 crc u32` (crc over the first 20 bytes).
pub(super) const SEGMENT_HEADER_LEN: usize = 24;

/// First bytes of every record. `0xF7` never occurs in UTF-8 (so never in a JSON body), which
/// makes re-synchronising after a damaged record cheap and reliable.
pub(super) const RECORD_MAGIC: [u8; 4] = [0xF7, b'L', b'R', b'1'];
/// `magic[4] body_len u32 crc u32 seq u64 batch_id[16] results u32`.
pub(super) const RECORD_HEADER_LEN: usize = 40;
/// Upper bound on one record's body; a larger length field is treated as damage.
pub(super) const MAX_BODY_LEN: usize = 256 << 20;

/// `magic[4] value u64 crc u32` (crc over the first 12 bytes).
pub(super) const ACK_ENTRY_LEN: usize = 16;
const ACK_MAGIC: [u8; 4] = *b"ACK1";
const HIGH_WATER_MAGIC: [u8; 4] = *b"HWM1";

/// A record's header fields, as read back from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordHeader {
    pub seq: u64,
    pub batch_id: Uuid,
    pub results: u32,
    pub body_len: u32,
}

impl RecordHeader {
    /// Header plus body.
    pub fn total_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.body_len)
    }
}

/// What is found at a position where a record should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parsed {
    /// A whole record whose checksum matches.
    Valid(RecordHeader),
    /// The bytes end before the record does (a torn write, or a damaged length field).
    Incomplete,
    /// Wrong magic, impossible length or checksum mismatch.
    Invalid(&'static str),
}

/// One ack-log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckEntry {
    /// The record with this sequence number was acknowledged (delivered or quarantined).
    Ack(u64),
    /// Every sequence number below this one has been used (written when the log is compacted,
    /// so numbers are never reused even after every segment was deleted).
    HighWater(u64),
}

/// The header of a new segment.
pub(super) fn encode_segment_header(segment_id: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[0..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&segment_id.to_le_bytes());
    let crc = crc32fast::hash(&out[0..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a segment header against the id in the file's name.
pub(super) fn check_segment_header(buf: &[u8], expected_id: u64) -> Result<(), String> {
    if buf.len() < SEGMENT_HEADER_LEN {
        return Err(format!(
            "segment header truncated ({} of {SEGMENT_HEADER_LEN} bytes)",
            buf.len()
        ));
    }
    if buf[0..8] != SEGMENT_MAGIC {
        return Err("not a spool segment (bad magic)".to_owned());
    }
    let crc = u32_at(buf, 20);
    if crc32fast::hash(&buf[0..20]) != crc {
        return Err("segment header checksum mismatch".to_owned());
    }
    let version = u32_at(buf, 8);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    let id = u64_at(buf, 12);
    if id != expected_id {
        return Err(format!(
            "segment header names segment {id}, file name says {expected_id}"
        ));
    }
    Ok(())
}

/// The bytes of one record.
pub(super) fn encode_record(seq: u64, batch_id: Uuid, results: u32, body: &[u8]) -> Vec<u8> {
    let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + body.len());
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(batch_id.as_bytes());
    out.extend_from_slice(&results.to_le_bytes());
    out.extend_from_slice(body);
    let crc = record_crc(&out[..RECORD_HEADER_LEN], body);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// CRC over the length field, the header fields after the checksum, and the body.
fn record_crc(header: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[4..8]);
    hasher.update(&header[12..RECORD_HEADER_LEN]);
    hasher.update(body);
    hasher.finalize()
}

/// Parses the record starting at `buf[0]`.
pub(super) fn parse_record(buf: &[u8]) -> Parsed {
    if buf.len() < RECORD_MAGIC.len() {
        return if RECORD_MAGIC.starts_with(buf) {
            Parsed::Incomplete
        } else {
            Parsed::Invalid("bad record magic")
        };
    }
    if buf[0..4] != RECORD_MAGIC {
        return Parsed::Invalid("bad record magic");
    }
    if buf.len() < RECORD_HEADER_LEN {
        return Parsed::Incomplete;
    }
    let body_len = u32_at(buf, 4);
    if body_len as usize > MAX_BODY_LEN {
        return Parsed::Invalid("record length out of range");
    }
    let end = RECORD_HEADER_LEN + body_len as usize;
    if buf.len() < end {
        return Parsed::Incomplete;
    }
    if record_crc(&buf[..RECORD_HEADER_LEN], &buf[RECORD_HEADER_LEN..end]) != u32_at(buf, 8) {
        return Parsed::Invalid("record checksum mismatch");
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&buf[20..36]);
    Parsed::Valid(RecordHeader {
        seq: u64_at(buf, 12),
        batch_id: Uuid::from_bytes(id),
        results: u32_at(buf, 36),
        body_len,
    })
}

/// The position of the next valid record in `buf` at or after `from`.
pub(super) fn find_next_record(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + RECORD_HEADER_LEN <= buf.len() {
        let offset = buf[at..].iter().position(|b| *b == RECORD_MAGIC[0])?;
        let candidate = at + offset;
        if matches!(parse_record(&buf[candidate..]), Parsed::Valid(_)) {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

/// The bytes of one ack-log entry.
pub(super) fn encode_ack(entry: AckEntry) -> [u8; ACK_ENTRY_LEN] {
    let (magic, value) = match entry {
        AckEntry::Ack(seq) => (ACK_MAGIC, seq),
        AckEntry::HighWater(seq) => (HIGH_WATER_MAGIC, seq),
    };
    let mut out = [0u8; ACK_ENTRY_LEN];
    out[0..4].copy_from_slice(&magic);
    out[4..12].copy_from_slice(&value.to_le_bytes());
    let crc = crc32fast::hash(&out[0..12]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes one ack-log entry; `None` if it is damaged.
pub(super) fn decode_ack(buf: &[u8]) -> Option<AckEntry> {
    if buf.len() < ACK_ENTRY_LEN || crc32fast::hash(&buf[0..12]) != u32_at(buf, 12) {
        return None;
    }
    let value = u64_at(buf, 4);
    if buf[0..4] == ACK_MAGIC {
        Some(AckEntry::Ack(value))
    } else if buf[0..4] == HIGH_WATER_MAGIC {
        Some(AckEntry::HighWater(value))
    } else {
        None
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}
