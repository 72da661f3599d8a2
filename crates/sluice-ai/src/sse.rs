//! Incremental Server-Sent Events framing.
//!
//! Upstream chunks are cut anywhere; events end at a blank line (`\n\n` or `\r\n\r\n`). The
//! parser hands back each complete event as a `Bytes` that shares memory with the chunk it
//! came from whenever the event did not straddle a chunk boundary (the common case), so
//! forwarding an event unchanged costs no copy. Only a trailing partial event is copied,
//! into a small carry-over buffer. Hand-written on purpose: we need this zero-copy control.

use bytes::{Bytes, BytesMut};

#[derive(Default)]
pub struct SseParser {
    carry: BytesMut,
    /// How much of `carry` is known to hold no terminator, so a long event arriving in many
    /// small chunks is scanned once, not once per chunk.
    scanned: usize,
}

/// A single event larger than this is passed on unparsed rather than buffered further:
/// memory stays bounded whatever the upstream sends.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One complete event: its raw bytes (including the terminating blank line) and its data.
pub struct Event {
    pub raw: Bytes,
}

// === impl SseParser ===

impl SseParser {
    /// Feeds one chunk; returns the events it completed, in order.
    pub fn feed(&mut self, chunk: Bytes) -> Vec<Event> {
        let mut events = Vec::new();
        // A terminator may straddle the old and new bytes: rescan the last 3 old ones.
        let mut from = self.scanned.saturating_sub(3);
        let mut data = if self.carry.is_empty() {
            chunk
        } else {
            self.carry.extend_from_slice(&chunk);
            self.carry.split().freeze()
        };
        while let Some(end) = event_end(&data, from) {
            let raw = data.split_to(end);
            events.push(Event { raw });
            from = 0;
        }
        if data.len() > MAX_EVENT_BYTES {
            events.push(Event { raw: data });
            self.scanned = 0;
            return events;
        }
        self.scanned = data.len();
        if !data.is_empty() {
            self.carry.extend_from_slice(&data);
        }
        events
    }

    /// What is left when the stream ends (an unterminated last event).
    pub fn finish(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        (!self.carry.is_empty()).then(|| self.carry.split().freeze())
    }
}

/// The index just past the first event terminator at or after `from`, if any.
fn event_end(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < data.len() {
        if data[i] == b'\n' {
            if data[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if data[i + 1] == b'\r' && data.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

// === impl Event ===

impl Event {
    /// The event's `event:` field, if any.
    pub fn name(&self) -> Option<&str> {
        self.fields("event").next()
    }

    /// The event's data (multiple `data:` lines joined by `\n`, as the SSE spec says).
    pub fn data(&self) -> String {
        self.fields("data").collect::<Vec<_>>().join("\n")
    }

    fn fields<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        std::str::from_utf8(&self.raw)
            .unwrap_or("")
            .lines()
            .filter_map(move |line| {
                let line = line.strip_suffix('\r').unwrap_or(line);
                let rest = line.strip_prefix(name)?.strip_prefix(':')?;
                Some(rest.strip_prefix(' ').unwrap_or(rest))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&str]) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            for event in parser.feed(Bytes::copy_from_slice(chunk.as_bytes())) {
                out.push(event.data());
            }
        }
        out
    }

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let whole = "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        for cut in 0..whole.len() {
            let got = collect(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "[DONE]"], "cut at {cut}");
        }
    }

    #[test]
    fn named_events_crlf_and_multiline_data() {
        let mut parser = SseParser::default();
        let events = parser.feed(Bytes::from_static(
            b"event: response.completed\r\ndata: {\"x\":\r\ndata: 1}\r\n\r\n",
        ));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name(), Some("response.completed"));
        assert_eq!(events[0].data(), "{\"x\":\n1}");
    }

    #[test]
    fn a_long_event_in_tiny_chunks_is_reassembled() {
        let whole = format!("data: {}\n\ndata: [DONE]\n\n", "x".repeat(10_000));
        let chunks: Vec<&str> = whole
            .as_bytes()
            .chunks(7)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let got = collect(&chunks);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), 10_000);
        assert_eq!(got[1], "[DONE]");
    }

    #[test]
    fn whole_events_share_the_chunk_memory() {
        let chunk = Bytes::from_static(b"data: 1\n\ndata: 2\n\n");
        let mut parser = SseParser::default();
        let events = parser.feed(chunk.clone());
        assert_eq!(
            events[0].raw.as_ptr(),
            chunk.as_ptr(),
            "no copy for a whole event"
        );
        assert!(parser.finish().is_none());
    }
}
