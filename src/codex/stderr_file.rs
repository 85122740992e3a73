//! A long-lived child's stderr in an unnamed file instead of a pipe, read only when its tail is needed.
//!
//! Codex logs to stderr at `codex_log` level, and some warnings repeat on every turn: a model Codex has
//! no metadata for (any custom provider's model) costs 12 warning lines per app-server turn. Through a
//! pipe, each line woke the proxy to read it, about as many wake-ups as the turn's JSON-RPC lines
//! themselves. Written to a file, those lines cost the proxy nothing until a worker fails and its last
//! lines are read for the error message.
//!
//! The file is created in the worker's private `CODEX_HOME` and unlinked at once, so it is gone with the
//! last descriptor, whatever way the proxy ends. The child's descriptor is in append mode: every write
//! lands at the end, also after [`StderrFile::trim`] cut the file back to empty, which keeps it under
//! [`STDERR_FILE_LIMIT`] plus what the child writes between two trims.

use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use parking_lot::Mutex;

use super::launch::StderrTail;
use super::lines::MAX_STDERR_LINE;

/// The size past which [`StderrFile::trim`] empties the file: 1 MiB.
pub const STDERR_FILE_LIMIT: u64 = 1 << 20;

/// How much of the end of the file is read for a tail: 16 KiB.
const TAIL_BYTES: u64 = 16 << 10;

/// The proxy's side of a child's stderr file.
pub struct StderrFile {
    file: std::fs::File,
    /// The end of the file as it was before the last trim, so a tail read just after a trim still has
    /// the lines before it.
    before_trim: Mutex<Vec<u8>>,
}

impl StderrFile {
    /// Creates the unnamed file in `dir` and returns it with the descriptor to give the child (as its
    /// `Stdio`).
    pub fn create(dir: &Path) -> io::Result<(StderrFile, std::fs::File)> {
        let file = tempfile::tempfile_in(dir)?;
        set_append(&file)?;
        let child = file.try_clone()?;
        let file = StderrFile {
            file,
            before_trim: Mutex::new(Vec::new()),
        };
        Ok((file, child))
    }

    /// Empties the file when it holds more than [`STDERR_FILE_LIMIT`], keeping its last lines in
    /// memory. A line the child writes between the read and the cut is lost.
    pub fn trim(&self) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len <= STDERR_FILE_LIMIT {
            return Ok(());
        }
        let end = self.read_end(len)?;
        *self.before_trim.lock() = end;
        self.file.set_len(0)
    }

    /// The last lines the child wrote, each cut to [`MAX_STDERR_LINE`] bytes.
    pub fn tail(&self) -> StderrTail {
        let earlier = self.before_trim.lock().clone();
        let now = self
            .file
            .metadata()
            .and_then(|meta| self.read_end(meta.len()))
            .unwrap_or_default();
        let mut tail = StderrTail::default();
        for line in earlier
            .split(|byte| *byte == b'\n')
            .chain(now.split(|byte| *byte == b'\n'))
        {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            tail.push(&String::from_utf8_lossy(
                &line[..line.len().min(MAX_STDERR_LINE)],
            ));
        }
        tail
    }

    /// The last [`TAIL_BYTES`] of a file of `len` bytes, from the first whole line on when cut.
    fn read_end(&self, len: u64) -> io::Result<Vec<u8>> {
        let start = len.saturating_sub(TAIL_BYTES);
        let mut bytes = vec![0; (len - start) as usize];
        let read = self.file.read_at(&mut bytes, start)?;
        bytes.truncate(read);
        if start > 0 {
            let first_line = bytes
                .iter()
                .position(|byte| *byte == b'\n')
                .map_or(0, |at| at + 1);
            bytes.drain(..first_line);
        }
        Ok(bytes)
    }
}

/// Puts the file's description in append mode (shared with every descriptor cloned from it).
fn set_append(file: &std::fs::File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_APPEND) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_tail_holds_the_last_lines_without_colours() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut child) = StderrFile::create(dir.path()).unwrap();
        writeln!(child, "\u{1b}[33m WARN\u{1b}[0m first").unwrap();
        writeln!(child, "error: the last one").unwrap();
        let tail = file.tail();
        assert_eq!(tail.text(), " WARN first\nerror: the last one");
        assert_eq!(
            tail.last_meaningful().as_deref(),
            Some("error: the last one")
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the file has no name"
        );
    }

    #[test]
    fn trimming_empties_a_full_file_and_keeps_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut child) = StderrFile::create(dir.path()).unwrap();
        let line = format!("{}\n", "w".repeat(99));
        for _ in 0..(STDERR_FILE_LIMIT / 100) {
            child.write_all(line.as_bytes()).unwrap();
        }
        file.trim().unwrap();
        assert_eq!(
            file.file.metadata().unwrap().len(),
            STDERR_FILE_LIMIT / 100 * 100,
            "not over the limit yet"
        );
        child.write_all(line.as_bytes()).unwrap();
        writeln!(child, "the line before the cut").unwrap();
        file.trim().unwrap();
        assert_eq!(file.file.metadata().unwrap().len(), 0);
        // The child's next write lands at the start of the emptied file, not past a hole.
        writeln!(child, "after the cut").unwrap();
        assert_eq!(file.file.metadata().unwrap().len(), 14);
        let tail = file.tail();
        assert_eq!(
            tail.text().lines().rev().take(2).collect::<Vec<_>>(),
            ["after the cut", "the line before the cut"]
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut child) = StderrFile::create(dir.path()).unwrap();
        writeln!(child, "{}", "é".repeat(MAX_STDERR_LINE)).unwrap();
        let text = file.tail().text();
        assert!(text.len() <= MAX_STDERR_LINE && text.len() >= MAX_STDERR_LINE - 1);
    }
}
