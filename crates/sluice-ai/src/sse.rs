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
}

/// One complete event: its raw bytes (including the terminating blank line) and its data.
pub struct Event {
    pub raw: Bytes,
}

// === impl SseParser ===

impl SseParser {
    /// Feeds one chunk; returns the events it completed, in order.
    pub fn feed(&mut self, chunk: Bytes) -> Vec<Event> {
        let mut events = Vec::new();
        let mut data = if self.carry.is_empty() {
            chunk
        } else {
            self.carry.extend_from_slice(&chunk);
            self.carry.split().freeze()
        };
        while let Some(end) = event_end(&data) {
            let raw = data.split_to(end);
            events.push(Event { raw });
        }
        if !data.is_empty() {
            self.carry.extend_from_slice(&data);
        }
        events
    }

    /// What is left when the stream ends (an unterminated last event).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.carry.is_empty()).then(|| self.carry.split().freeze())
    }
}

/// The index just past the first event terminator, if any.
fn event_end(data: &[u8]) -> Option<usize> {
    let mut i = 0;
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
