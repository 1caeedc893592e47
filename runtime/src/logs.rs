//! Container log lines in the CRI format (`<RFC3339Nano> <stream> <P|F> <content>`), as written
//! by the shim and read by `capstan logs`. Owns line splitting and formatting (pure) and the thin
//! appending writer; it must not know about pipes or polling, which belong to the shim.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::{Error, Result};

/// Longest content written in one log line; longer lines are split into partial (`P`) lines,
/// like containerd does, so a runaway line cannot grow the shim's memory.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The container's standard output.
    Stdout,
    /// The container's standard error.
    Stderr,
}

impl Stream {
    /// The stream's name as written in CRI logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Whether a log line is complete (`F`) or a fragment of a longer line (`P`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A full line (ended by a newline or by the end of the stream).
    Full,
    /// A partial line; the next line of the same stream continues it.
    Partial,
}

impl Tag {
    fn as_str(self) -> &'static str {
        match self {
            Tag::Full => "F",
            Tag::Partial => "P",
        }
    }
}

/// Formats one CRI log line, newline included. `content` must not contain the trailing newline.
pub fn format_line(ts: DateTime<Utc>, stream: Stream, tag: Tag, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 48);
    out.extend_from_slice(ts.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Splits a byte stream into log lines, buffering an unfinished line between reads.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineSplitter {
    /// A splitter emitting partial lines once `max` bytes accumulate without a newline.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(1),
        }
    }

    /// Feeds bytes; returns the lines completed by them, in order.
    pub fn push(&mut self, data: &[u8]) -> Vec<(Tag, Vec<u8>)> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                out.push((Tag::Full, std::mem::take(&mut self.buf)));
            } else {
                self.buf.push(b);
                if self.buf.len() >= self.max {
                    out.push((Tag::Partial, std::mem::take(&mut self.buf)));
                }
            }
        }
        out
    }

    /// Ends the stream: an unterminated last line is emitted as a full line.
    pub fn finish(&mut self) -> Option<(Tag, Vec<u8>)> {
        if self.buf.is_empty() {
            None
        } else {
            Some((Tag::Full, std::mem::take(&mut self.buf)))
        }
    }
}

/// Appends CRI lines to one container's log file.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
}

impl LogWriter {
    /// Opens (creating if needed) the log file for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(Error::io("open log", path))?;
        Ok(Self { file })
    }

    /// Writes one line stamped with the current time. Errors are returned, not retried:
    /// a full disk must not block the container, so the shim logs and drops the line.
    pub fn write(&mut self, stream: Stream, tag: Tag, content: &[u8]) -> std::io::Result<()> {
        self.file
            .write_all(&format_line(Utc::now(), stream, tag, content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn format_line_is_rfc3339nano_stream_tag_content() {
        let ts = Utc
            .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
            .single()
            .unwrap_or_default()
            + chrono::Duration::nanoseconds(6);
        let line = format_line(ts, Stream::Stderr, Tag::Full, b"err");
        assert_eq!(
            String::from_utf8_lossy(&line),
            "2024-01-02T03:04:05.000000006Z stderr F err\n"
        );
        let line = format_line(ts, Stream::Stdout, Tag::Partial, b"");
        assert_eq!(
            String::from_utf8_lossy(&line),
            "2024-01-02T03:04:05.000000006Z stdout P \n"
        );
    }

    #[test]
    fn splitter_buffers_across_reads_and_flushes_at_end() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"hel"), vec![]);
        assert_eq!(
            s.push(b"lo\n\nwor"),
            vec![(Tag::Full, b"hello".to_vec()), (Tag::Full, Vec::new())]
        );
        assert_eq!(s.finish(), Some((Tag::Full, b"wor".to_vec())));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn splitter_cuts_long_lines_into_partials() {
        let mut s = LineSplitter::new(4);
        assert_eq!(
            s.push(b"abcdefghij\n"),
            vec![
                (Tag::Partial, b"abcd".to_vec()),
                (Tag::Partial, b"efgh".to_vec()),
                (Tag::Full, b"ij".to_vec())
            ]
        );
    }
}
