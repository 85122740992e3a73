//! Reading a child's output line by line without ever buffering more than a fixed cap per line.
//!
//! `tokio`'s `lines()` grows its buffer to the longest line a child prints, so one 300 MB line costs
//! 300 MB. [`read_line`] stops at `cap` bytes and says so ([`Line::TooLong`]); the caller then either
//! gives up on the stream (Codex's JSONL on stdout: the run or worker fails) or calls [`skip_rest`] to
//! discard the rest of the line without buffering it (stderr, where only a short tail is kept).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest stdout line (one JSONL event or JSON-RPC message) accepted from Codex: 16 MiB. The largest
/// legitimate messages are a whole answer in one event (`item.completed`, `turn/completed`) or a command's
/// aggregated output; Codex bounds a model answer by its output-token limit (a few hundred KiB of text,
/// at most ~6× that once JSON-escaped), so 16 MiB leaves a wide margin.
pub const MAX_STDOUT_LINE: usize = 16 << 20;

/// How much of each stderr line is kept for error messages: 2 KiB. The rest of a longer line is read and
/// discarded.
pub const MAX_STDERR_LINE: usize = 2 << 10;

/// What [`read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// `buf` holds one whole line, without its `\n` (or `\r\n`).
    Complete,
    /// The line is longer than the cap: `buf` holds its first `cap` bytes, and the reader stands in the
    /// middle of the line.
    TooLong,
    /// End of the stream; `buf` is empty.
    Eof,
}

/// Reads the next line into `buf` (cleared first), buffering at most `cap` bytes of it.
pub async fn read_line<R>(reader: &mut R, buf: &mut Vec<u8>, cap: usize) -> std::io::Result<Line>
where
    R: AsyncBufRead + Unpin,
{
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let newline = available.iter().position(|byte| *byte == b'\n');
        let take = newline.unwrap_or(available.len());
        let room = cap - buf.len();
        if take > room {
            buf.extend_from_slice(&available[..room]);
            reader.consume(room);
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(&available[..take]);
        match newline {
            Some(at) => {
                reader.consume(at + 1);
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                return Ok(Line::Complete);
            }
            None => {
                let consumed = available.len();
                reader.consume(consumed);
            }
        }
    }
}

/// Discards the rest of the current line (through its `\n`) without buffering it.
pub async fn skip_rest<R>(reader: &mut R) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
{
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(());
        }
        if let Some(at) = available.iter().position(|byte| *byte == b'\n') {
            reader.consume(at + 1);
            return Ok(());
        }
        let consumed = available.len();
        reader.consume(consumed);
    }
}

/// Calls `keep` with every line of `reader`, each cut to [`MAX_STDERR_LINE`] bytes, until EOF or an error.
/// Memory stays bounded whatever the child prints.
pub async fn for_each_capped_line<R>(reader: R, mut keep: impl FnMut(&str))
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut reader = tokio::io::BufReader::new(reader);
    let mut buf = Vec::with_capacity(256);
    loop {
        match read_line(&mut reader, &mut buf, MAX_STDERR_LINE).await {
            Ok(Line::Complete) => keep(&String::from_utf8_lossy(&buf)),
            Ok(Line::TooLong) => {
                keep(&String::from_utf8_lossy(&buf));
                if skip_rest(&mut reader).await.is_err() {
                    return;
                }
            }
            Ok(Line::Eof) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn lines_are_cut_at_the_cap_and_the_rest_can_be_skipped() {
        let input = format!("short\r\n{}\nnext\nlast", "x".repeat(100));
        // A tiny buffer makes the reader cross buffer boundaries inside lines.
        let mut reader = BufReader::with_capacity(7, input.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).await.unwrap(),
            Line::TooLong
        );
        assert_eq!(buf, b"xxxxxxxxxx");
        skip_rest(&mut reader).await.unwrap();
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"next");
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"last");
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Eof
        );
    }

    #[tokio::test]
    async fn a_line_exactly_at_the_cap_is_complete() {
        let mut reader = BufReader::new("0123456789\n".as_bytes());
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"0123456789");
    }

    #[tokio::test]
    async fn stderr_lines_keep_only_their_start() {
        let input = format!("{}\nafter\n", "e".repeat(MAX_STDERR_LINE * 3));
        let mut kept = Vec::new();
        for_each_capped_line(input.as_bytes(), |line| kept.push(line.to_string())).await;
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].len(), MAX_STDERR_LINE);
        assert_eq!(kept[1], "after");
    }
}
