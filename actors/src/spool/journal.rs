//! The open-batch journal: every result not yet in a spooled batch, on disk.
//!
//! A sealed batch is a spool record; the results of the batch that is still open live here, so
//! that a result is durable once it is collected, not only once its batch is sealed (a `kill -9`
//! between the two would otherwise lose it). A sealed batch the spool refused (full, I/O error)
//! and that waits in memory keeps its results here too, until the spool takes it.
//!
//! The file `DIR/open.journal` holds spool records (same framing and CRC as segments), one per
//! result, numbered 0, 1, 2… through the file, each carrying the id of the batch it belongs to
//! (consecutive records of one id form one batch). Its life:
//!
//! - a result arrives → [`Journal::append`] writes its record (no fsync); [`Journal::sync`]
//!   makes every written record durable with one `fdatasync` (the Reporter calls it a few
//!   milliseconds later, so a burst of results costs one sync — group commit). A failed write is
//!   cut off again; if that fails too the journal is marked broken and refuses appends until
//!   the next successful [`Journal::rewrite`];
//! - a batch is sealed → the sealed batch is appended to the spool (fsync'd) first, then
//!   [`Journal::rewrite`] atomically replaces the journal with what is not in the spool: the
//!   batches waiting in memory and the open batch (usually nothing). A crash between the two
//!   leaves a batch id that is already in the spool: recovery drops it rather than send the
//!   results twice;
//! - at start, [`Journal::open`] returns the batches found (the records up to the first damaged
//!   or torn one; a torn tail is the unsynced end of a crash). The Reporter seals each with its
//!   original id, so a batch that was sealed and sent but not yet dropped from the journal is
//!   stored once by the API, which de-duplicates by `batch_id`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::format::{self, Parsed, RECORD_HEADER_LEN};
use super::{io_err, replace_atomically, SpoolError};

/// The journal's file name inside the spool directory.
pub(super) const JOURNAL: &str = "open.journal";
/// Its temporary name while it is rewritten.
pub(super) const JOURNAL_TMP: &str = "open.journal.tmp";

/// The results of one batch found in the journal (the open one, or one sealed but not spooled).
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
    /// Records in the file; the next record's number.
    records: u64,
    /// Bytes of whole records in the file (where the next append starts).
    valid_len: u64,
    /// Written records not yet covered by a sync.
    unsynced: bool,
    /// A failed write could not be cut off, or a rewrite failed: the file may not match the
    /// counters, so appends are refused until a rewrite succeeds.
    broken: bool,
}

impl Journal {
    /// Opens the journal of the spool in `dir`, returning the batches it holds, oldest first,
    /// and whether a damaged or partial tail was cut off. Only I/O errors fail.
    pub(super) fn open(dir: &Path) -> Result<(Journal, Vec<OpenBatch>, bool), SpoolError> {
        let path = dir.join(JOURNAL);
        let bytes = read_journal(&path)?;
        let (batches, valid_len) = decode(&bytes);
        let torn = valid_len < bytes.len();
        if torn {
            tracing::warn!(
                message = "Open-batch journal ends with a partial or damaged record; cut off (results not yet synced when the agent stopped).",
                path = %path.display(),
                kept = batches.iter().map(|b| b.results.len()).sum::<usize>(),
                cut_bytes = bytes.len() - valid_len,
            );
        }
        // Rewrite it with exactly the valid records, so that appends continue after them.
        let valid = &bytes[..valid_len];
        let file = replace_atomically(dir, &dir.join(JOURNAL_TMP), &path, valid)
            .map_err(io_err(&path, "rewrite the open-batch journal"))?;
        let records = batches.iter().map(|b| b.results.len() as u64).sum();
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                path,
                file,
                records,
                valid_len: valid_len as u64,
                unsynced: false,
                broken: false,
            },
            batches,
            torn,
        ))
    }

    /// Writes one result of batch `batch_id`. Durable after the next [`Journal::sync`].
    pub fn append(&mut self, batch_id: Uuid, result: &[u8]) -> Result<(), SpoolError> {
        if self.broken {
            return Err(SpoolError::Io {
                path: self.path.clone(),
                action: "append to the open-batch journal (broken by an earlier failure; it is rewritten at the next seal)",
                source: io::Error::other("journal needs a rewrite"),
            });
        }
        let bytes = format::encode_record(self.records, batch_id, 1, result);
        match self.file.write_all(&bytes) {
            Ok(()) => {
                self.records += 1;
                self.valid_len += bytes.len() as u64;
                self.unsynced = true;
                Ok(())
            }
            Err(source) => {
                // Cut the partial record, so that the next record follows whole ones.
                let valid_len = self.valid_len;
                let cut = self
                    .file
                    .set_len(valid_len)
                    .and_then(|()| self.file.seek(SeekFrom::Start(valid_len)).map(|_| ()));
                if cut.is_err() {
                    self.broken = true;
                }
                Err(SpoolError::Io {
                    path: self.path.clone(),
                    action: "append to the open-batch journal",
                    source,
                })
            }
        }
    }

    /// Whether records were written since the last sync.
    pub fn needs_sync(&self) -> bool {
        self.unsynced
    }

    /// Whether appends are refused until the next successful [`Journal::rewrite`].
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.broken {
            return Err(SpoolError::Io {
                path: self.path.clone(),
                action: "sync the open-batch journal (broken by an earlier failure)",
                source: io::Error::other("journal needs a rewrite"),
            });
        }
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(io_err(&self.path, "sync the open-batch journal"))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Atomically replaces the journal with the batches of the file whose ids are in `keep`
    /// (sealed batches that wait in memory), followed by the open batch `open`. Call it after
    /// the other batches sealed from the old content are in the spool.
    pub fn rewrite(
        &mut self,
        keep: &HashSet<Uuid>,
        open: Option<(Uuid, &[Vec<u8>])>,
    ) -> Result<(), SpoolError> {
        let kept: Vec<OpenBatch> = if keep.is_empty() {
            Vec::new()
        } else {
            let bytes = read_journal(&self.path)?;
            decode(&bytes)
                .0
                .into_iter()
                .filter(|b| keep.contains(&b.batch_id) && Some(b.batch_id) != open.map(|o| o.0))
                .collect()
        };
        let mut bytes = Vec::new();
        let mut records = 0u64;
        let groups = kept
            .iter()
            .map(|b| (b.batch_id, b.results.as_slice()))
            .chain(open);
        for (batch_id, results) in groups {
            for result in results {
                bytes.extend(format::encode_record(records, batch_id, 1, result));
                records += 1;
            }
        }
        match replace_atomically(&self.dir, &self.dir.join(JOURNAL_TMP), &self.path, &bytes) {
            Ok(file) => {
                self.file = file;
                self.records = records;
                self.valid_len = bytes.len() as u64;
                self.unsynced = false;
                self.broken = false;
                Ok(())
            }
            Err(source) => {
                self.broken = true;
                Err(SpoolError::Io {
                    path: self.path.clone(),
                    action: "rewrite the open-batch journal",
                    source,
                })
            }
        }
    }
}

fn read_journal(path: &Path) -> Result<Vec<u8>, SpoolError> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(SpoolError::Io {
            path: path.to_path_buf(),
            action: "read the open-batch journal",
            source,
        }),
    }
}

/// The batches in `bytes`, oldest first, and the length of the valid prefix. Records must be
/// numbered 0, 1, 2… through the file; decoding stops at the first that is not, or is damaged.
fn decode(bytes: &[u8]) -> (Vec<OpenBatch>, usize) {
    let mut at = 0usize;
    let mut batches: Vec<OpenBatch> = Vec::new();
    let mut expected = 0u64;
    while at < bytes.len() {
        let Parsed::Valid(header) = format::parse_record(&bytes[at..]) else {
            break;
        };
        if header.seq != expected {
            break;
        }
        let start = at + RECORD_HEADER_LEN;
        let end = start + header.body_len as usize;
        let result = bytes[start..end].to_vec();
        match batches.last_mut() {
            Some(batch) if batch.batch_id == header.batch_id => batch.results.push(result),
            _ => batches.push(OpenBatch {
                batch_id: header.batch_id,
                results: vec![result],
            }),
        }
        expected += 1;
        at = end;
    }
    (batches, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn batches(journal: &Journal) -> Vec<OpenBatch> {
        let bytes = fs::read(&journal.path).expect("read journal");
        decode(&bytes).0
    }

    fn none() -> HashSet<Uuid> {
        HashSet::new()
    }

    #[test]
    fn appended_results_come_back_after_reopen_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, open, torn) = Journal::open(dir.path()).expect("open");
        assert!(open.is_empty());
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
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].batch_id, id);
        assert_eq!(
            open[0].results,
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        // Appends continue the numbering after a reopen.
        journal.append(id, b"{\"c\":3}").expect("append");
        journal.sync().expect("sync");
        assert_eq!(batches(&journal)[0].results.len(), 3);
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
        assert_eq!(open[0].results, vec![b"{\"a\":1}".to_vec()]);
        // The file was rewritten with the valid prefix only.
        let (_, open, torn) = Journal::open(dir.path()).expect("reopen again");
        assert!(!torn);
        assert_eq!(open[0].results.len(), 1);
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
        assert_eq!(open[0].results, vec![b"{\"n\":0}".to_vec()]);
    }

    #[test]
    fn rewrite_keeps_the_batches_asked_for_then_the_open_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, _, _) = Journal::open(dir.path()).expect("open");
        let (spooled, waiting, open) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        journal.append(spooled, b"{\"s\":1}").expect("append");
        journal.append(waiting, b"{\"w\":1}").expect("append");
        journal.append(waiting, b"{\"w\":2}").expect("append");
        // `spooled` went to the spool, `waiting` was refused by it and waits in memory.
        let rest = vec![b"{\"z\":9}".to_vec()];
        journal
            .rewrite(&HashSet::from([waiting]), Some((open, &rest)))
            .expect("rewrite");
        journal.append(open, b"{\"y\":8}").expect("append");
        journal.sync().expect("sync");
        let found = batches(&journal);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].batch_id, waiting);
        assert_eq!(found[0].results.len(), 2);
        assert_eq!(found[1].batch_id, open);
        assert_eq!(
            found[1].results,
            vec![b"{\"z\":9}".to_vec(), b"{\"y\":8}".to_vec()]
        );
        journal.rewrite(&none(), None).expect("clear");
        assert_eq!(fs::metadata(&journal.path).expect("metadata").len(), 0);
        assert!(!dir.path().join(JOURNAL_TMP).exists());
    }

    #[test]
    fn a_failed_rewrite_refuses_appends_until_a_rewrite_succeeds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut journal, _, _) = Journal::open(dir.path()).expect("open");
        let id = Uuid::new_v4();
        journal.append(id, b"{\"a\":1}").expect("append");
        // A directory where the temporary file must go makes the rewrite fail.
        fs::create_dir(dir.path().join(JOURNAL_TMP)).expect("block the tmp name");
        assert!(journal.rewrite(&none(), None).is_err());
        assert!(journal.is_broken());
        assert!(journal.append(id, b"{\"b\":2}").is_err());
        assert!(journal.sync().is_err());
        fs::remove_dir(dir.path().join(JOURNAL_TMP)).expect("unblock");
        let open = vec![b"{\"a\":1}".to_vec()];
        journal
            .rewrite(&none(), Some((id, &open)))
            .expect("rewrite");
        assert!(!journal.is_broken());
        journal.append(id, b"{\"b\":2}").expect("append");
        journal.sync().expect("sync");
        assert_eq!(batches(&journal)[0].results.len(), 2);
    }
}
