//! The NDJSON copy of every host result: one JSON object per line, flushed per line.

use std::fs::File;
use std::io::{self, BufWriter, Write};

/// Where NDJSON lines go.
pub enum NdjsonOutput {
    /// Standard output.
    Stdout(io::Stdout),
    /// A file (created or truncated by the agent).
    File(BufWriter<File>),
}

impl NdjsonOutput {
    /// Writes one line and flushes it, so a reader sees whole lines as soon as hosts finish.
    pub fn write_line(&mut self, json: &[u8]) -> io::Result<()> {
        fn write(w: &mut dyn Write, json: &[u8]) -> io::Result<()> {
            w.write_all(json)?;
            w.write_all(b"\n")?;
            w.flush()
        }
        match self {
            NdjsonOutput::Stdout(stdout) => write(&mut stdout.lock(), json),
            NdjsonOutput::File(file) => write(file, json),
        }
    }
}
