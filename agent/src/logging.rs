//! Logging: JSON lines on standard error (one event per line, fields flattened), or a
//! human-readable format when standard error is a terminal; and, once config.yaml is read and
//! names a `log_dir`, the same JSON lines in daily files there, deleted after
//! `log_retention_days`.
//!
//! The subscriber is installed before config.yaml is read, so the file output is a reload slot
//! that stays empty until [`add_file_output`] fills it. Files are named
//! `luumen-agent.YYYY-MM-DD.log` (UTC date, tracing-appender's daily rotation); pruning only ever
//! touches regular files with exactly that name pattern.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tracing::Subscriber;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Identity, Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// The log files' name prefix: `luumen-agent.YYYY-MM-DD.log`.
pub const FILE_PREFIX: &str = "luumen-agent";
/// The log files' name suffix (extension).
pub const FILE_SUFFIX: &str = "log";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// How often old log files are pruned after the first time (at [`add_file_output`]).
const PRUNE_INTERVAL: Duration = DAY;

/// The file output's slot: [`Identity`] (nothing) until [`add_file_output`].
type FileSlot = Box<dyn Layer<Registry> + Send + Sync>;
/// The subscriber below the standard error layer.
type Base = Layered<reload::Layer<FileSlot, Registry>, Registry>;

/// Adds (or removes) the file output of an installed subscriber. Cheap to clone.
#[derive(Clone)]
pub struct LogHandle(reload::Handle<FileSlot, Registry>);

static HANDLE: OnceLock<LogHandle> = OnceLock::new();

/// Installs the global subscriber with its standard error output. `RUST_LOG` overrides
/// `default_filter`. The returned handle (also available from [`handle`]) adds the file output
/// later; the filter applies to both outputs.
pub fn init(default_filter: &str) -> LogHandle {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = if std::io::stderr().is_terminal() {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed()
    } else {
        json_layer(std::io::stderr).boxed()
    };
    let (subscriber, handle) = subscriber(filter, stderr);
    subscriber.init();
    let _ = HANDLE.set(handle.clone());
    handle
}

/// The handle of the subscriber installed by [`init`], if it was called.
pub fn handle() -> Option<LogHandle> {
    HANDLE.get().cloned()
}

/// Registry ← file slot (empty) ← `stderr` ← `filter` (global: both outputs see the same
/// events).
fn subscriber(
    filter: EnvFilter,
    stderr: Box<dyn Layer<Base> + Send + Sync>,
) -> (impl Subscriber + Send + Sync, LogHandle) {
    let (files, handle) = reload::Layer::new(empty_slot());
    let subscriber = tracing_subscriber::registry()
        .with(files)
        .with(stderr)
        .with(filter);
    (subscriber, LogHandle(handle))
}

fn empty_slot() -> FileSlot {
    Box::new(Identity::new())
}

/// One JSON object per line, event fields flattened, no span or target fields.
fn json_layer<S, W>(writer: W) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(false)
        .with_ansi(false)
        .with_writer(writer)
}

/// Keeps the file output running: while it lives, log lines go to the files and old files are
/// pruned once a day. Dropping it stops the pruning, detaches the file output and flushes the
/// lines still buffered, so keep it until the process ends.
#[must_use = "the file output stops when the guard is dropped"]
pub struct FileGuard {
    handle: LogHandle,
    stop_pruner: Option<mpsc::Sender<()>>,
    pruner: Option<JoinHandle<()>>,
    worker: Option<WorkerGuard>,
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        // Disconnecting the channel wakes the pruner, which then returns.
        drop(self.stop_pruner.take());
        if let Some(pruner) = self.pruner.take() {
            let _ = pruner.join();
        }
        // Fails only when the subscriber is gone, and then there is nothing to detach.
        let _ = self.handle.0.reload(empty_slot());
        // Flushes the buffered lines and waits (briefly) for the writer thread.
        drop(self.worker.take());
    }
}

/// Also writes every log line (the same JSON lines as on standard error) to daily files in
/// `dir` (created if missing), deletes this output's files older than `retention_days` now and
/// then once a day. Errors name the directory when it cannot be created or written.
pub fn add_file_output(
    handle: &LogHandle,
    dir: &Path,
    retention_days: u32,
) -> anyhow::Result<FileGuard> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(FILE_PREFIX)
        .filename_suffix(FILE_SUFFIX)
        .build(dir)
        .with_context(|| format!("cannot write log files in {}", dir.display()))?;
    let (writer, worker) = tracing_appender::non_blocking(appender);
    handle
        .0
        .reload(Box::new(json_layer(writer)) as FileSlot)
        .context("cannot add the log file output: the log subscriber is gone")?;
    let mut guard = FileGuard {
        handle: handle.clone(),
        stop_pruner: None,
        pruner: None,
        worker: Some(worker),
    };
    tracing::info!(
        message = "Writing log files.",
        dir = %dir.display(),
        retention_days
    );
    prune_logged(dir, retention_days);
    let (stop, stopped) = mpsc::channel::<()>();
    let pruned_dir = dir.to_path_buf();
    let pruner = std::thread::Builder::new()
        .name("log-pruner".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PRUNE_INTERVAL) {
                prune_logged(&pruned_dir, retention_days);
            }
        })
        .context("cannot start the log pruning thread")?;
    guard.stop_pruner = Some(stop);
    guard.pruner = Some(pruner);
    Ok(guard)
}

/// [`prune_old_logs`] with its outcome logged.
fn prune_logged(dir: &Path, retention_days: u32) {
    match prune_old_logs(dir, retention_days, SystemTime::now()) {
        Ok(deleted) => {
            for path in deleted {
                tracing::info!(message = "Old log file deleted.", path = %path.display());
            }
        }
        Err(error) => tracing::warn!(
            message = "Cannot prune old log files.",
            dir = %dir.display(),
            error = %error
        ),
    }
}

/// Deletes the files in `dir` written by this module's appender (regular files named
/// `luumen-agent.YYYY-MM-DD.log`, not symbolic links, nothing else) whose last modification is
/// more than `retention_days` days before `now`; returns the deleted paths. A retention of 0
/// counts as 1 day, so the file being written is never deleted. A file that cannot be deleted
/// is logged and skipped; only an unreadable `dir` is an error.
pub fn prune_old_logs(
    dir: &Path,
    retention_days: u32,
    now: SystemTime,
) -> std::io::Result<Vec<PathBuf>> {
    let retention = DAY * retention_days.max(1);
    let mut deleted = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_log_file_name) {
            continue;
        }
        let path = entry.path();
        // symlink_metadata: a link is never followed, and is not a regular file.
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        let Ok(modified) = metadata.modified() else {
            continue;
        };
        // A modification time in the future is not old.
        let old = now
            .duration_since(modified)
            .is_ok_and(|age| age > retention);
        if !old {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => deleted.push(path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(
                message = "Cannot delete an old log file.",
                path = %path.display(),
                error = %error
            ),
        }
    }
    deleted.sort();
    Ok(deleted)
}

/// Whether `name` is exactly `luumen-agent.YYYY-MM-DD.log`.
fn is_log_file_name(name: &str) -> bool {
    let Some(date) = name
        .strip_prefix(FILE_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(FILE_SUFFIX))
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return false;
    };
    date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    const NAME: &str = "luumen-agent.2024-01-31.log";

    fn touch(dir: &Path, name: &str, age: Duration, now: SystemTime) -> PathBuf {
        let path = dir.join(name);
        let file = File::create(&path).unwrap();
        file.set_modified(now - age).unwrap();
        path
    }

    fn days(n: u64) -> Duration {
        DAY * u32::try_from(n).unwrap()
    }

    #[test]
    fn only_the_appenders_own_names_match() {
        assert!(is_log_file_name(NAME));
        assert!(is_log_file_name("luumen-agent.1999-12-01.log"));
        for name in [
            "luumen-agent.log",
            "luumen-agent.2024-01-31.log.gz",
            "luumen-agent.2024-01-31.txt",
            "luumen-agent.2024-01-31-10.log",
            "luumen-agent.2024_01_31.log",
            "luumen-agent.2024-1-31.log",
            "luumen-agent.20240131xx.log",
            "luumen-agent-2024-01-31.log",
            "other.2024-01-31.log",
            "xluumen-agent.2024-01-31.log",
            ".luumen-agent.2024-01-31.log",
            "luumen-agent.2024-01-31.log~",
            "luumen-agent.٢٠٢٤-٠١-٣١.log",
        ] {
            assert!(!is_log_file_name(name), "{name}");
        }
    }

    #[test]
    fn pruning_deletes_only_old_matching_files() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let old = touch(dir.path(), "luumen-agent.2024-01-01.log", days(40), now);
        let just_old = touch(
            dir.path(),
            "luumen-agent.2024-01-02.log",
            days(30) + Duration::from_secs(60),
            now,
        );
        let recent = touch(dir.path(), "luumen-agent.2024-02-01.log", days(29), now);
        let today = touch(dir.path(), NAME, Duration::ZERO, now);
        let future = touch(
            dir.path(),
            "luumen-agent.2030-01-01.log",
            Duration::ZERO,
            now,
        );
        File::options()
            .write(true)
            .open(&future)
            .unwrap()
            .set_modified(now + days(5))
            .unwrap();
        let foreign = [
            touch(dir.path(), "other.log", days(400), now),
            touch(dir.path(), "luumen-agent.2024-01-01.log.gz", days(400), now),
            touch(dir.path(), "luumen-agent.log", days(400), now),
            touch(dir.path(), "notes.2024-01-01.log", days(400), now),
        ];
        // A directory with a matching name is left alone.
        let subdir = dir.path().join("luumen-agent.2023-01-01.log");
        std::fs::create_dir(&subdir).unwrap();
        File::open(&subdir)
            .unwrap()
            .set_modified(now - days(400))
            .unwrap();

        let deleted = prune_old_logs(dir.path(), 30, now).unwrap();

        assert_eq!(deleted, vec![old.clone(), just_old.clone()]);
        assert!(!old.exists() && !just_old.exists());
        for kept in [&recent, &today, &future, &subdir] {
            assert!(kept.exists(), "{}", kept.display());
        }
        for kept in &foreign {
            assert!(kept.exists(), "{}", kept.display());
        }
        // Nothing more to do the second time.
        assert!(prune_old_logs(dir.path(), 30, now).unwrap().is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn pruning_never_follows_or_deletes_symbolic_links() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let target = touch(elsewhere.path(), "precious", days(400), now);
        let link = dir.path().join("luumen-agent.2020-01-01.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();

        assert!(prune_old_logs(dir.path(), 1, now).unwrap().is_empty());
        assert!(target.exists());
        assert!(std::fs::symlink_metadata(&link).is_ok());
    }

    #[test]
    fn zero_retention_keeps_the_current_days_file() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let current = touch(dir.path(), NAME, Duration::from_secs(3 * 3600), now);
        let yesterday = touch(dir.path(), "luumen-agent.2024-01-30.log", days(2), now);

        let deleted = prune_old_logs(dir.path(), 0, now).unwrap();

        assert_eq!(deleted, vec![yesterday]);
        assert!(current.exists());
    }

    #[test]
    fn pruning_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(prune_old_logs(&dir.path().join("missing"), 30, SystemTime::now()).is_err());
    }

    /// A standard error stand-in the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// The subscriber `init` installs, with JSON "standard error" captured.
    fn test_subscriber() -> (impl Subscriber + Send + Sync, LogHandle, Captured) {
        let stderr = Captured::default();
        let writer = stderr.clone();
        let (subscriber, handle) = subscriber(
            EnvFilter::new("info"),
            json_layer(move || writer.clone()).boxed(),
        );
        (subscriber, handle, stderr)
    }

    fn log_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| is_log_file_name(p.file_name().unwrap().to_str().unwrap()))
            .collect();
        files.sort();
        files
    }

    fn json_lines(text: &str) -> Vec<serde_json::Value> {
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn the_file_output_writes_the_same_json_lines_into_daily_files() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("nested").join("logs");
        let (subscriber, handle, stderr) = test_subscriber();
        let guard = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(message = "Before the file output.");
            let guard = add_file_output(&handle, &logs, 30).unwrap();
            tracing::info!(message = "Host collected.", host = "db1", duration_ms = 12);
            tracing::debug!(message = "Filtered out.");
            guard
        });
        drop(guard); // flushes

        let files = log_files(&logs);
        assert_eq!(files.len(), 1, "{files:?}");
        let lines = json_lines(&std::fs::read_to_string(&files[0]).unwrap());
        let messages: Vec<&str> = lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["Writing log files.", "Host collected."]);
        let event = &lines[1];
        assert_eq!(event["host"], "db1");
        assert_eq!(event["duration_ms"], 12);
        assert_eq!(event["level"], "INFO");
        assert!(event["timestamp"].is_string());
        assert!(event.get("target").is_none());

        // Standard error got everything, the file the same lines from its start on.
        let stderr_lines = json_lines(&stderr.text());
        assert_eq!(stderr_lines.len(), 3);
        assert_eq!(stderr_lines[0]["message"], "Before the file output.");
        for (on_stderr, in_file) in stderr_lines[1..].iter().zip(&lines) {
            let strip = |v: &serde_json::Value| {
                let mut v = v.clone();
                v.as_object_mut().unwrap().remove("timestamp");
                v
            };
            assert_eq!(strip(on_stderr), strip(in_file));
        }
    }

    #[test]
    fn dropping_the_guard_detaches_the_file_output() {
        let dir = tempfile::tempdir().unwrap();
        let (subscriber, handle, stderr) = test_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let guard = add_file_output(&handle, dir.path(), 30).unwrap();
            tracing::info!(message = "While attached.");
            drop(guard);
            tracing::info!(message = "After the guard.");
        });

        let text = std::fs::read_to_string(&log_files(dir.path())[0]).unwrap();
        assert!(text.contains("While attached."));
        assert!(!text.contains("After the guard."));
        assert!(stderr.text().contains("After the guard."));
    }

    #[test]
    fn adding_the_file_output_prunes_old_files_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let old = touch(dir.path(), "luumen-agent.2000-01-01.log", days(10), now);
        let foreign = touch(dir.path(), "keep-me.txt", days(10), now);
        let (subscriber, handle, stderr) = test_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let _guard = add_file_output(&handle, dir.path(), 7).unwrap();
        });

        assert!(!old.exists());
        assert!(foreign.exists());
        assert!(stderr.text().contains("Old log file deleted."));
    }

    #[test]
    fn an_unusable_log_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("a-file");
        std::fs::write(&not_a_dir, "x").unwrap();
        let (_subscriber, handle, _stderr) = test_subscriber();
        for bad in [not_a_dir.clone(), not_a_dir.join("logs")] {
            let error = add_file_output(&handle, &bad, 30).err().unwrap();
            let text = format!("{error:#}");
            assert!(text.contains(&bad.display().to_string()), "{text}");
        }
    }
}
