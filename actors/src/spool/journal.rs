//! The open-batch journal: every result of the batch still being filled, on disk.
//!
//! A sealed batch is a spool record; the results of the batch that is still open live here, so
//! that a result is durable once it is collected, not only once its batch is sealed (a `kill -9`
//! between the two would otherwise lose it).
//!
//! The file `DIR/open.journal` holds spool records (same framing and CRC as segments), one per
//! result, all carrying the open batch's id. Its life:
//!
//! - a result arrives → [`Journal::append`] writes its record (no fsync); [`Journal::sync`]
//!   makes every written record durable with one `fdatasync` (the Reporter calls it a few
//!   milliseconds later, so a burst of results costs one sync — group commit);
//! - the batch is sealed → the sealed batch is appended to the spool (fsync'd) first, then
//!   [`Journal::replace`] atomically rewrites the journal with what is still open (usually
//!   nothing). A crash between the two leaves a journal whose batch id is already in the
//!   spool: recovery drops it rather than send the results twice;
//! - at start, [`Journal::open`] returns the open batch found (the records up to the first
//!   damaged or torn one; a torn tail is the unsynced end of a crash). The Reporter seals it with
//!   its original id, so that a batch that was sealed and sent but whose journal was not yet
//!   cleared is stored once by the API, which de-duplicates by `batch_id`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::format::{self, Parsed, RECORD_HEADER_LEN};
use super::{io_err, replace_atomically, SpoolError};

/// The journal's file name inside the spool directory.
pub(super) const JOURNAL: &str = "open.journal";
/// Its temporary name while it is rewritten.
pub(super) const JOURNAL_TMP: &str = "open.journal.tmp";

/// The results of the batch that was open when the agent last stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBatch {
    /// The id the batch was given when its first result arrived.
    pub batch_id: Uuid,
    /// The serialized results, in arrival order.
    pub results: Vec<Vec<u8>>,
}

/// The open-batch journal of a spool.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Records written since the file was (re)created; the next record's index.
    records: u64,
    /// Written records not yet covered by a sync.
    unsynced: bool,
}

impl Journal {
    /// Opens the journal of the spool in `dir`, returning the open batch it holds. Damaged bytes
    /// after the last whole record are cut off (logged); only I/O errors fail.
    pub(super) fn open(dir: &Path) -> Result<(Journal, Option<OpenBatch>, bool), SpoolError> {
        let path = dir.join(JOURNAL);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(SpoolError::Io {
                    path,
                    action: "read the open-batch journal",
                    source,
                })
            }
        };
        let (open, valid_len) = decode(&bytes);
        let torn = valid_len < bytes.len();
        if torn {
            tracing::warn!(
                message = "Open-batch journal ends with a partial or damaged record; cut off (results not yet synced when the agent stopped).",
                path = %path.display(),
                kept = open.as_ref().map_or(0, |o| o.results.len()),
                cut_bytes = bytes.len() - valid_len,
            );
        }
        // Rewrite it with exactly the valid records, so that appends continue after them.
        let valid = &bytes[..valid_len];
        let file = replace_atomically(dir, &dir.join(JOURNAL_TMP), &path, valid)
            .map_err(io_err(&path, "rewrite the open-batch journal"))?;
        let records = open.as_ref().map_or(0, |o| o.results.len() as u64);
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                path,
                file,
                records,
                unsynced: false,
            },
            open,
            torn,
        ))
    }

    /// Writes one result of the open batch `batch_id`. Durable after the next [`Journal::sync`].
    pub fn append(&mut self, batch_id: Uuid, result: &[u8]) -> Result<(), SpoolError> {
        let bytes = format::encode_record(self.records, batch_id, 1, result);
        self.records += 1;
        self.unsynced = true;
        self.file
            .write_all(&bytes)
            .map_err(io_err(&self.path, "append to the open-batch journal"))
    }

    /// Whether records were written since the last sync.
    pub fn needs_sync(&self) -> bool {
        self.unsynced
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(io_err(&self.path, "sync the open-batch journal"))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Atomically replaces the journal with the open batch `open` (nothing when `None` or
    /// empty). Call it after the batches sealed from the old content are in the spool.
    pub fn replace(&mut self, open: Option<(Uuid, &[Vec<u8>])>) -> Result<(), SpoolError> {
        let mut bytes = Vec::new();
        let mut records = 0u64;
        if let Some((batch_id, results)) = open {
            for result in results {
                bytes.extend(format::encode_record(records, batch_id, 1, result));
                records += 1;
            }
        }
        self.file = replace_atomically(&self.dir, &self.dir.join(JOURNAL_TMP), &self.path, &bytes)
            .map_err(io_err(&self.path, "rewrite the open-batch journal"))?;
        self.records = records;
        self.unsynced = false;
        Ok(())
    }
}

/// The open batch in `bytes` and the length of its valid prefix. Records must be numbered
/// 0, 1, 2… and carry one batch id; decoding stops at the first that does not.
fn decode(bytes: &[u8]) -> (Option<OpenBatch>, usize) {
    let mut at = 0usize;
    let mut open: Option<OpenBatch> = None;
    while at < bytes.len() {
        let Parsed::Valid(header) = format::parse_record(&bytes[at..]) else {
            break;
        };
        let expected = open.as_ref().map_or(0, |o| o.results.len() as u64);
        if header.seq != expected || open.as_ref().is_some_and(|o| o.batch_id != header.batch_id) {
            break;
        }
        let start = at + RECORD_HEADER_LEN;
        let end = start + header.body_len as usize;
        open.get_or_insert_with(|| OpenBatch {
            batch_id: header.batch_id,
            results: Vec::new(),
        })
        .results
        .push(bytes[start..end].to_vec());
        at = end;
    }
    (open, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn results(journal: &Journal) -> Option<OpenBatch> {
        let bytes = fs::read(&journal.path).expect("read journal");
        decode(&bytes).0
    }

    #[test]
    fn appended_results_come_back_after_reopen_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, open, torn) = Journal::open(dir.path()).expect("open");
        assert_eq!(open, None);
        assert!(!torn);
        let id = Uuid::new_v4();
        journal.append(id, b"{\"a\":1}").expect("append");
        journal.append(id, b"{\"b\":2}").expect("append");
        assert!(journal.needs_sync());
        journal.sync().expect("sync");
        assert!(!journal.needs_sync());
        drop(journal);
        let (mut journal, open, torn) = Journal::open(dir.path()).expect("reopen");
        assert!(!torn);
        let open = open.expect("open batch");
        assert_eq!(open.batch_id, id);
        assert_eq!(
            open.results,
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        // Appends continue the numbering after a reopen.
        journal.append(id, b"{\"c\":3}").expect("append");
        journal.sync().expect("sync");
        assert_eq!(results(&journal).expect("batch").results.len(), 3);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_whole_records_are_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, _, _) = Journal::open(dir.path()).expect("open");
        let id = Uuid::new_v4();
        journal.append(id, b"{\"a\":1}").expect("append");
        journal.append(id, b"{\"b\":2}").expect("append");
        journal.sync().expect("sync");
        drop(journal);
        let path = dir.path().join(JOURNAL);
        let len = fs::metadata(&path).expect("metadata").len();
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(len - 3).expect("truncate");
        let (_, open, torn) = Journal::open(dir.path()).expect("reopen");
        assert!(torn);
        assert_eq!(open.expect("batch").results, vec![b"{\"a\":1}".to_vec()]);
        // The file was rewritten with the valid prefix only.
        let (_, open, torn) = Journal::open(dir.path()).expect("reopen again");
        assert!(!torn);
        assert_eq!(open.expect("batch").results.len(), 1);
    }

    #[test]
    fn flipped_bytes_stop_decoding_at_the_damaged_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, _, _) = Journal::open(dir.path()).expect("open");
        let id = Uuid::new_v4();
        for n in 0..3 {
            journal
                .append(id, format!("{{\"n\":{n}}}").as_bytes())
                .expect("append");
        }
        journal.sync().expect("sync");
        drop(journal);
        let path = dir.path().join(JOURNAL);
        let mut bytes = fs::read(&path).expect("read");
        let second = RECORD_HEADER_LEN + 7;
        bytes[second + RECORD_HEADER_LEN + 2] ^= 0xFF;
        fs::write(&path, &bytes).expect("write");
        let (_, open, torn) = Journal::open(dir.path()).expect("reopen");
        assert!(torn);
        assert_eq!(open.expect("batch").results, vec![b"{\"n\":0}".to_vec()]);
    }

    #[test]
    fn replace_leaves_only_the_new_open_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, _, _) = Journal::open(dir.path()).expect("open");
        let old = Uuid::new_v4();
        journal.append(old, b"{\"a\":1}").expect("append");
        let new = Uuid::new_v4();
        let rest = vec![b"{\"z\":9}".to_vec()];
        journal.replace(Some((new, &rest))).expect("replace");
        journal.append(new, b"{\"y\":8}").expect("append");
        journal.sync().expect("sync");
        let open = results(&journal).expect("batch");
        assert_eq!(open.batch_id, new);
        assert_eq!(
            open.results,
            vec![b"{\"z\":9}".to_vec(), b"{\"y\":8}".to_vec()]
        );
        journal.replace(None).expect("clear");
        assert_eq!(fs::metadata(&journal.path).expect("metadata").len(), 0);
        assert!(!dir.path().join(JOURNAL_TMP).exists());
    }
}
