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

/// The longest field name the parser reads, with its `": "`: a line may be this much
/// longer than the event size limit.
const FIELD_PREFIX_MAX: usize = "event: ".len();

/// Feed bytes with [`Parser::push`], then take complete events with [`Parser::next_event`].
///
/// An event whose data grows beyond `max_event`, or a line longer than `max_event` plus
/// [`FIELD_PREFIX_MAX`], is refused with [`SseError::TooLarge`] however the bytes were
/// chunked, and the refusal is final: the parser drops what it held, ignores later bytes
/// and yields nothing more, so a caller that keeps reading holds no more than the limit
/// and never gets an oversized event (or any event after it).
pub struct Parser {
    buf: BytesMut,
    max_event: usize,
    current: Event,
    has_data: bool,
    /// The last line ended with `\r`: a `\n` right after it belongs to that line ending.
    after_cr: bool,
    /// An event or line was refused: everything after it is ignored.
    refused: bool,
}

impl Parser {
    pub fn new(max_event: usize) -> Parser {
        Parser {
            buf: BytesMut::new(),
            max_event,
            current: Event::default(),
            has_data: false,
            after_cr: false,
            refused: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if !self.refused {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next complete event, if the buffered bytes hold one; after a refusal, `None`.
    pub fn next_event(&mut self) -> Result<Option<Event>, SseError> {
        if self.refused {
            return Ok(None);
        }
        let next = self.parse_next();
        if next.is_err() {
            self.refused = true;
            self.buf = BytesMut::new();
            self.current = Event::default();
        }
        next
    }

    fn parse_next(&mut self) -> Result<Option<Event>, SseError> {
        loop {
            if self.after_cr && !self.buf.is_empty() {
                self.after_cr = false;
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
            }
            let Some(pos) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                // An unfinished line: refuse it now if it can only end too large.
                self.check_line(&self.buf)?;
                return Ok(None);
            };
            let line = self.buf.split_to(pos);
            self.after_cr = self.buf[0] == b'\r';
            self.buf.advance(1);
            self.check_line(&line)?;
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

    /// Refuses a line, finished or not, that is too long or would take the event's data
    /// over the limit. Only what the finished line is sure to exceed counts, so the
    /// verdict does not depend on where the bytes were cut.
    fn check_line(&self, line: &[u8]) -> Result<(), SseError> {
        if line.len() > self.max_event + FIELD_PREFIX_MAX {
            return Err(SseError::TooLarge(line.len()));
        }
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            // Decoding never shortens a value: an invalid sequence of 1 to 3 bytes becomes
            // one 3-byte U+FFFD.
            let data = self.current.data.len() + usize::from(self.has_data) + value.len();
            if data > self.max_event {
                return Err(SseError::TooLarge(data));
            }
        }
        Ok(())
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

    #[test]
    fn refusal_is_final() {
        let mut p = Parser::new(8);
        p.push(b"data: 0123456789\n");
        assert!(matches!(p.next_event(), Err(SseError::TooLarge(_))));
        // A reader that goes on must neither get the oversized event nor grow the data.
        p.push(b"\n");
        assert_eq!(p.next_event(), Ok(None));
        p.push(b"data: more\n\n");
        assert_eq!(p.next_event(), Ok(None));
        assert!(p.buf.is_empty() && p.current.data.is_empty());
    }

    #[test]
    fn event_at_the_limit_is_accepted_however_cut() {
        let mut p = Parser::new(10);
        p.push(b"data: 0123456789");
        assert_eq!(p.next_event(), Ok(None));
        p.push(b"\n\n");
        assert_eq!(p.next_event().unwrap().unwrap().data, "0123456789");
    }

    #[test]
    fn event_ended_by_cr_cr_is_yielded_at_once() {
        let mut p = Parser::new(1024);
        p.push(b"data: x\r\r");
        assert_eq!(p.next_event().unwrap().unwrap().data, "x");
        // The "\n" of a "\r\n" cut in two is not taken for an empty line.
        p.push(b"data: y\r");
        assert_eq!(p.next_event().unwrap(), None);
        p.push(b"\ndata: z\n\n");
        assert_eq!(p.next_event().unwrap().unwrap().data, "y\nz");
    }
}

#[cfg(test)]
mod proptests;
