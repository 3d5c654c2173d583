//! An incremental Server-Sent Events parser (the subset MCP uses: `data`, `event`,
//! `id`, comments) with a bound on event size.

use bytes::{Buf, BytesMut};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum SseError {
    /// One event grew beyond the limit.
    TooLarge(usize),
}

/// Feed bytes with [`Parser::push`], then take complete events with [`Parser::next_event`].
pub struct Parser {
    buf: BytesMut,
    max_event: usize,
    current: Event,
    has_data: bool,
}

impl Parser {
    pub fn new(max_event: usize) -> Parser {
        Parser {
            buf: BytesMut::new(),
            max_event,
            current: Event::default(),
            has_data: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if the buffered bytes hold one.
    pub fn next_event(&mut self) -> Result<Option<Event>, SseError> {
        loop {
            let Some(pos) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                let pending = self.buf.len() + self.current.data.len();
                if pending > self.max_event {
                    return Err(SseError::TooLarge(pending));
                }
                return Ok(None);
            };
            // A lone '\r' at the end may be the first half of "\r\n": wait for more.
            if self.buf[pos] == b'\r' && pos + 1 == self.buf.len() {
                return Ok(None);
            }
            let line = self.buf.split_to(pos);
            let skip = if self.buf[0] == b'\r' && self.buf.get(1) == Some(&b'\n') {
                2
            } else {
                1
            };
            self.buf.advance(skip);
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data {
                    self.has_data = false;
                    return Ok(Some(std::mem::take(&mut self.current)));
                }
                self.current = Event::default();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                    if self.current.data.len() > self.max_event {
                        return Err(SseError::TooLarge(self.current.data.len()));
                    }
                }
                "event" => self.current.event = Some(value.to_string()),
                "id" => self.current.id = Some(value.to_string()),
                _ => {}
            }
        }
    }
}

/// Formats one SSE `message` event carrying a JSON-RPC message.
pub fn format_event(data: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(data.len() + 24);
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_events_and_crlf() {
        let mut p = Parser::new(1024);
        p.push(b"event: message\r\nda");
        assert_eq!(p.next_event().unwrap(), None);
        p.push(b"ta: {\"a\":1}\r\n\r\n: comment\n\ndata: x\ndata: y\nid: 7\n\n");
        let e = p.next_event().unwrap().unwrap();
        assert_eq!(e.data, "{\"a\":1}");
        assert_eq!(e.event.as_deref(), Some("message"));
        let e = p.next_event().unwrap().unwrap();
        assert_eq!(e.data, "x\ny");
        assert_eq!(e.id.as_deref(), Some("7"));
        assert_eq!(p.next_event().unwrap(), None);
    }

    #[test]
    fn priming_event_without_data_is_skipped() {
        let mut p = Parser::new(1024);
        p.push(b"id: 1\nretry: 100\n\ndata: z\n\n");
        assert_eq!(p.next_event().unwrap().unwrap().data, "z");
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut p = Parser::new(8);
        p.push(b"data: 0123456789");
        assert!(matches!(p.next_event(), Err(SseError::TooLarge(_))));
    }
}
