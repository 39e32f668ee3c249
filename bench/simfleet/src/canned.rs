//! Canned answers: one real run of the collection script, replayed with another marker.
//!
//! The agent frames every section of its script's output with a marker that is fresh per run
//! (`@@LUUMEN-<32 hex>@@`, see `properties/src/plan/mod.rs`). [`Canned::record`] runs the real
//! script once on this machine with a template marker and keeps stdout and stderr cut at every
//! occurrence of that marker; [`Canned::answer`] glues the pieces back together with the marker
//! a client's script declares on its first line, so the answer parses exactly like the real one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The marker the template run uses (`@@LUUMEN-` + 32 hex digits + `@@`, like `Plan::linux`).
pub const TEMPLATE_MARKER: &str = "@@LUUMEN-51a1f1ee7c0ffee0000000000000000d@@";

/// Why a template could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The collection script could not be read.
    #[error("cannot read the collection script {path}: {source}")]
    ReadScript {
        /// The script's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `/bin/sh -s` could not be run.
    #[error("cannot run `/bin/sh -s` to record the template: {0}")]
    Run(std::io::Error),
    /// The run produced no framed section.
    #[error("the template run of `/bin/sh -s` printed no section framed by {TEMPLATE_MARKER} (exit status {status})")]
    NoSections {
        /// Exit status of the shell.
        status: String,
    },
}

/// stdout and stderr of one real run, cut at every occurrence of [`TEMPLATE_MARKER`].
#[derive(Debug, Clone)]
pub struct Canned {
    stdout: Vec<Vec<u8>>,
    stderr: Vec<Vec<u8>>,
}

impl Canned {
    /// Builds the template from a capture made with `marker`.
    pub fn from_capture(marker: &str, stdout: &[u8], stderr: &[u8]) -> Canned {
        Canned {
            stdout: cut(stdout, marker.as_bytes()),
            stderr: cut(stderr, marker.as_bytes()),
        }
    }

    /// Runs the collection script `linux.sh` once here through `/bin/sh -s`, prefixed exactly as
    /// `Plan::linux` does (`M='<marker>'`, `LUUMEN_SUDO=<0|1>`), and keeps its output.
    pub fn record(script: &Path, sudo: bool) -> Result<Canned, Error> {
        let body = std::fs::read(script).map_err(|source| Error::ReadScript {
            path: script.to_path_buf(),
            source,
        })?;
        let mut input =
            format!("M='{TEMPLATE_MARKER}'\nLUUMEN_SUDO={}\n", u8::from(sudo)).into_bytes();
        input.extend_from_slice(&body);
        let mut child = Command::new("/bin/sh")
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::Run)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).map_err(Error::Run)?;
        }
        let out = child.wait_with_output().map_err(Error::Run)?;
        let canned = Canned::from_capture(TEMPLATE_MARKER, &out.stdout, &out.stderr);
        if canned.sections() == 0 {
            return Err(Error::NoSections {
                status: out.status.to_string(),
            });
        }
        Ok(canned)
    }

    /// Number of complete sections (END frames) on stdout.
    pub fn sections(&self) -> usize {
        self.stdout
            .iter()
            .skip(1)
            .filter(|piece| piece.starts_with(b" END "))
            .count()
    }

    /// Bytes of one answer (stdout, stderr) for a marker of the template's length.
    pub fn sizes(&self) -> (usize, usize) {
        let size = |pieces: &[Vec<u8>]| {
            pieces.iter().map(Vec::len).sum::<usize>()
                + pieces.len().saturating_sub(1) * TEMPLATE_MARKER.len()
        };
        (size(&self.stdout), size(&self.stderr))
    }

    /// The recorded stdout and stderr with `marker` in place of the template's.
    pub fn answer(&self, marker: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (join(&self.stdout, marker), join(&self.stderr, marker))
    }
}

fn cut(data: &[u8], marker: &[u8]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut rest = data;
    while let Some(at) = find(rest, marker) {
        pieces.push(rest[..at].to_vec());
        rest = &rest[at + marker.len()..];
    }
    pieces.push(rest.to_vec());
    pieces
}

fn join(pieces: &[Vec<u8>], marker: &[u8]) -> Vec<u8> {
    let len =
        pieces.iter().map(Vec::len).sum::<usize>() + pieces.len().saturating_sub(1) * marker.len();
    let mut out = Vec::with_capacity(len);
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(marker);
        }
        out.extend_from_slice(piece);
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The marker a script declares on its first line, `M='@@LUUMEN-<32 hex>@@'`, as `Plan::linux`
/// writes it; `None` when the first line is anything else.
pub fn script_marker(script: &[u8]) -> Option<&[u8]> {
    let line = script.split(|&b| b == b'\n').next()?;
    let marker = line.strip_prefix(b"M='")?.strip_suffix(b"'")?;
    let hex = marker.strip_prefix(b"@@LUUMEN-")?.strip_suffix(b"@@")?;
    (hex.len() == 32 && hex.iter().all(u8::is_ascii_hexdigit)).then_some(marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OTHER: &str = "@@LUUMEN-0123456789abcdef0123456789abcdef@@";

    #[test]
    fn answer_replaces_every_marker() {
        let m = TEMPLATE_MARKER;
        let stdout = format!("{m} BEGIN a\nx\n\n{m} END a 000\n{m} BEGIN b\n\n{m} END b 001\n");
        let stderr = format!("{m} BEGIN a\n\n{m} END a 000\n");
        let canned = Canned::from_capture(m, stdout.as_bytes(), stderr.as_bytes());
        assert_eq!(canned.sections(), 2);
        assert_eq!(canned.sizes(), (stdout.len(), stderr.len()));
        let (out, err) = canned.answer(OTHER.as_bytes());
        assert_eq!(out, stdout.replace(m, OTHER).into_bytes());
        assert_eq!(err, stderr.replace(m, OTHER).into_bytes());
    }

    #[test]
    fn marker_is_taken_from_the_first_line_only() {
        let script = format!("M='{OTHER}'\nLUUMEN_SUDO=1\necho hi\n");
        assert_eq!(script_marker(script.as_bytes()), Some(OTHER.as_bytes()));
        for bad in [
            "echo hi\nM='@@LUUMEN-0123456789abcdef0123456789abcdef@@'\n",
            "M='@@LUUMEN-0123@@'\n",
            "M='@@LUUMEN-0123456789abcdef0123456789abcdeg@@'\n",
            "M=@@LUUMEN-0123456789abcdef0123456789abcdef@@\n",
            "",
        ] {
            assert_eq!(script_marker(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn record_runs_the_real_script() {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../properties/src/plan/linux.sh");
        let canned = Canned::record(&script, false).expect("record");
        // os_release, uname, uptime, cpuinfo, meminfo, ... run on every Linux machine.
        assert!(canned.sections() >= 8, "sections: {}", canned.sections());
        let (out, _) = canned.answer(OTHER.as_bytes());
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(&format!("{OTHER} BEGIN os_release\n")));
        assert!(!text.contains(TEMPLATE_MARKER));
    }
}
