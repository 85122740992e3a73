//! [`AnswerLimit`]: where an answer must end for the request's `stop` sequences and its token limit,
//! decided as the text arrives, without I/O. Both engines use it: the app-server turn core feeds it
//! each delta, sends on only what it releases and interrupts the turn once it has ended; the exec core
//! applies it to the whole answer at once ([`AnswerLimit::apply`]).
//!
//! **Stop sequences.** The answer ends before the first occurrence of any stop sequence. While the
//! text streams, the last `longest stop − 1` bytes stay held back (a stop may be starting there), so
//! no byte past a stop is ever released; everything else goes out at once.
//!
//! **Token limit.** Answer tokens are counted with OpenAI's `o200k_base` encoding (the GPT-4o / GPT-5
//! family's, through `tiktoken-rs`). When the text holds more than the limit, the answer is cut after
//! exactly `limit` tokens. To keep counting linear, text that ends before a word boundary well behind
//! the end is counted once and remembered; the encoder never joins text across such a boundary (a
//! space followed by a letter starts a new pre-tokenizer piece), so the count stays exact.

use crate::turn::FinishReason;

/// Text behind the end that is never taken into the remembered count (a word boundary is looked for
/// only before it), so a piece still growing at the end is always counted whole.
const RECOUNT_WINDOW: usize = 256;

/// The stop and length limits of one answer, fed the answer's text in order.
#[derive(Debug, Clone, Default)]
pub struct AnswerLimit {
    stop: Vec<String>,
    max_tokens: Option<u64>,
    /// Everything received so far (uncut).
    text: String,
    /// Bytes of `text` already released.
    released: usize,
    /// Why and where the answer ended (`cut` bytes), once it has.
    ended: Option<(FinishReason, usize)>,
    /// `text[..counted_bytes]` ends at a word boundary and holds `counted_tokens` tokens.
    counted_bytes: usize,
    counted_tokens: usize,
}

impl AnswerLimit {
    /// The limits of a request: its `stop` sequences (empty ones are ignored) and `max_tokens`.
    pub fn new(stop: &[String], max_tokens: Option<u64>) -> AnswerLimit {
        AnswerLimit {
            stop: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            max_tokens,
            ..AnswerLimit::default()
        }
    }

    /// Whether there is anything to enforce.
    pub fn is_active(&self) -> bool {
        !self.stop.is_empty() || self.max_tokens.is_some()
    }

    /// Why the answer ended early, once it has: [`FinishReason::StopSequence`] for a stop sequence,
    /// [`FinishReason::Length`] for the token limit. The turn should be interrupted then.
    pub fn ended(&self) -> Option<FinishReason> {
        self.ended.map(|(reason, _)| reason)
    }

    /// The answer as released or to be released: cut where it ended, else all text so far.
    pub fn answer(&self) -> &str {
        match self.ended {
            Some((_, cut)) => &self.text[..cut],
            None => &self.text,
        }
    }

    /// Takes in the next piece of the answer and returns the text that may now be sent (possibly
    /// empty). Once the answer has ended, nothing more is released.
    pub fn push(&mut self, delta: &str) -> String {
        if self.ended.is_some() {
            return String::new();
        }
        self.text.push_str(delta);
        self.check();
        let until = match self.ended {
            Some((_, cut)) => cut,
            None => {
                let hold = self.stop.iter().map(String::len).max().unwrap_or(1) - 1;
                floor_boundary(&self.text, self.text.len().saturating_sub(hold))
            }
        };
        self.release(until)
    }

    /// The answer is complete: what was held back (no stop sequence followed it).
    pub fn flush(&mut self) -> String {
        let until = self.answer().len();
        self.release(until)
    }

    /// The limits applied to a whole answer: the cut text and, when it was cut, why.
    pub fn apply(
        stop: &[String],
        max_tokens: Option<u64>,
        text: &str,
    ) -> (String, Option<FinishReason>) {
        let mut limit = AnswerLimit::new(stop, max_tokens);
        if !limit.is_active() {
            return (text.to_string(), None);
        }
        limit.push(text);
        (limit.answer().to_string(), limit.ended())
    }

    fn release(&mut self, until: usize) -> String {
        if until <= self.released {
            return String::new();
        }
        let out = self.text[self.released..until].to_string();
        self.released = until;
        out
    }

    /// Finds the first stop sequence and the token cut, and ends the answer at the earlier.
    fn check(&mut self) {
        // A stop match always starts at or after `released` (see the hold-back), but it may start in
        // the held-back tail, which begins there.
        let from = self.released;
        let stop_at = self
            .stop
            .iter()
            .enumerate()
            .filter_map(|(index, stop)| {
                self.text[from..]
                    .find(stop.as_str())
                    .map(|at| (from + at, index))
            })
            .min();
        let length_at = self.token_cut();
        self.ended = match (stop_at, length_at) {
            (Some((stop, _)), Some(length)) if length < stop => {
                Some((FinishReason::Length, length))
            }
            (Some((stop, index)), _) => Some((FinishReason::StopSequence(index), stop)),
            (None, Some(length)) => Some((FinishReason::Length, length)),
            (None, None) => None,
        };
    }

    /// The byte where the text passes `max_tokens`, if it does.
    fn token_cut(&mut self) -> Option<usize> {
        let max = usize::try_from(self.max_tokens?).unwrap_or(usize::MAX);
        // A token is at least one byte: text of at most `max` bytes cannot exceed the limit.
        if self.text.len() <= max {
            return None;
        }
        let bpe = tiktoken_rs::o200k_base_singleton();
        let tail = &self.text[self.counted_bytes..];
        let tokens = bpe.encode_ordinary(tail);
        if self.counted_tokens + tokens.len() > max {
            let keep = max.saturating_sub(self.counted_tokens);
            let bytes = bpe
                .decode_bytes(&tokens[..keep])
                .map(|bytes| bytes.len())
                .unwrap_or(0);
            let cut = floor_boundary(&self.text, self.counted_bytes + bytes);
            // Never take back text already released.
            return Some(cut.max(self.released));
        }
        // Remember the count up to a word boundary well behind the end.
        let limit = tail.len().saturating_sub(RECOUNT_WINDOW);
        if let Some(boundary) = word_boundary_before(tail, limit) {
            let counted = bpe.encode_ordinary(&tail[..boundary]).len();
            self.counted_bytes += boundary;
            self.counted_tokens += counted;
        }
        None
    }
}

/// The largest char boundary of `text` at or below `at`.
fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The last position before `limit` where a space follows a non-space and precedes an ASCII letter:
/// the encoder starts a new piece there.
fn word_boundary_before(text: &str, limit: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    (1..limit.min(bytes.len().saturating_sub(1)))
        .rev()
        .find(|&at| {
            bytes[at] == b' '
                && !bytes[at - 1].is_ascii_whitespace()
                && bytes[at + 1].is_ascii_alphabetic()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn without_limits_everything_passes_at_once() {
        let mut limit = AnswerLimit::new(&[], None);
        assert!(!limit.is_active());
        assert_eq!(limit.push("abc"), "abc");
        assert_eq!(limit.flush(), "");
        assert_eq!(limit.ended(), None);
    }

    #[test]
    fn a_stop_across_a_delta_boundary_is_never_sent() {
        let mut limit = AnswerLimit::new(&stops(&["END", "x"]), None);
        let mut sent = String::new();
        for delta in ["Hello E", "N", "D more"] {
            sent.push_str(&limit.push(delta));
            assert!(!sent.contains('E') || sent == "Hello ", "{sent}");
        }
        assert_eq!(sent, "Hello ");
        assert_eq!(limit.ended(), Some(FinishReason::StopSequence(0)));
        assert_eq!(limit.answer(), "Hello ");
        assert_eq!(limit.push("more"), "");
    }

    #[test]
    fn only_the_longest_stop_minus_one_is_held_back() {
        let mut limit = AnswerLimit::new(&stops(&["STOP"]), None);
        assert_eq!(limit.push("abcdef"), "abc");
        assert_eq!(limit.push("g"), "d");
        assert_eq!(limit.flush(), "efg");
        assert_eq!(limit.ended(), None);
    }

    #[test]
    fn the_earliest_stop_wins() {
        let (text, reason) = AnswerLimit::apply(&stops(&["c", "b"]), None, "abcabc");
        // "b" (index 1) comes first in the text.
        assert_eq!(
            (text.as_str(), reason),
            ("a", Some(FinishReason::StopSequence(1)))
        );
    }

    #[test]
    fn the_token_limit_cuts_after_exactly_that_many_tokens() {
        let bpe = tiktoken_rs::o200k_base_singleton();
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(40);
        let (cut, reason) = AnswerLimit::apply(&[], Some(7), &text);
        assert_eq!(reason, Some(FinishReason::Length));
        assert_eq!(bpe.encode_ordinary(&cut).len(), 7, "{cut}");
        assert!(text.starts_with(&cut));
        // Streamed in small pieces, the cut is the same.
        let mut limit = AnswerLimit::new(&[], Some(300));
        let mut sent = String::new();
        for piece in text.as_bytes().chunks(5) {
            sent.push_str(&limit.push(std::str::from_utf8(piece).unwrap()));
        }
        sent.push_str(&limit.flush());
        assert_eq!(limit.ended(), Some(FinishReason::Length));
        assert_eq!(sent, AnswerLimit::apply(&[], Some(300), &text).0);
        assert_eq!(bpe.encode_ordinary(&sent).len(), 300);
        // Within the limit nothing is cut.
        let (whole, reason) = AnswerLimit::apply(&[], Some(1000), "short answer");
        assert_eq!((whole.as_str(), reason), ("short answer", None));
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let mut limit = AnswerLimit::new(&stops(&["ééé"]), None);
        let sent = limit.push("aé");
        assert!(sent.is_empty() || sent == "a", "{sent}");
        let (cut, _) = AnswerLimit::apply(&[], Some(2), &"日本語のテキスト".repeat(10));
        assert!(!cut.is_empty());
    }
}
