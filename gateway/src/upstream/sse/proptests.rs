//! Property tests of the SSE parser: any bytes in any chunking stay within the event size
//! limit (also after a refusal, since callers keep pushing), formatted events come back
//! as they were sent with any line ending, and chunking never changes what is parsed.

use proptest::prelude::*;

use super::{format_event, Event, Parser, SseError};
use crate::proptest_support::config;

/// The most a parser with this limit holds between events: one unfinished line of at
/// most the limit plus the longest field name and its ": ".
fn buffer_bound(max: usize) -> usize {
    max + "event: ".len()
}

/// `bytes` cut at the given points.
fn split(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

/// What a parser yields for these chunks: the events before the first refusal, and
/// whether there was one. Like the gateway's readers, it keeps pushing and asking after
/// a refusal, and checks on the way that nothing it holds or yields outgrows the limit
/// and that nothing is yielded after a refusal.
fn run(max: usize, chunks: &[Vec<u8>]) -> Result<(Vec<Event>, bool), TestCaseError> {
    let mut p = Parser::new(max);
    let mut events = Vec::new();
    let mut refused = false;
    for chunk in chunks {
        p.push(chunk);
        loop {
            let next = p.next_event();
            if !matches!(next, Ok(Some(_))) {
                prop_assert!(
                    p.buf.len() <= buffer_bound(max),
                    "holds {} bytes",
                    p.buf.len()
                );
                prop_assert!(
                    p.current.data.len() <= max,
                    "holds {} bytes of data",
                    p.current.data.len()
                );
            }
            match next {
                Ok(None) => break,
                Ok(Some(e)) => {
                    prop_assert!(
                        e.data.len() <= max,
                        "yielded {} bytes over a limit of {max}",
                        e.data.len()
                    );
                    prop_assert!(!refused, "yielded {:?} after a refusal", e);
                    events.push(e);
                }
                Err(SseError::TooLarge(_)) => {
                    refused = true;
                    break;
                }
            }
        }
    }
    Ok((events, refused))
}

/// Bytes that look like an event stream: field lines with every line ending, comments,
/// unknown fields, non-UTF-8 bytes, blank lines, and raw noise.
fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop::sample::select(vec![
        "data:", "data: ", "data:  ", "event: ", "id: ", ": ", "retry: ", "", "dat", "x: ",
    ]);
    let byte = prop_oneof![
        4 => b'a'..=b'z',
        1 => Just(b' '),
        1 => Just(b':'),
        1 => Just(0xc3u8),
        1 => Just(0xffu8),
    ];
    let end = prop::sample::select(vec!["\n", "\r", "\r\n", ""]);
    let line = (prefix, prop::collection::vec(byte, 0..24), end).prop_map(|(p, v, e)| {
        let mut l = p.as_bytes().to_vec();
        l.extend_from_slice(&v);
        l.extend_from_slice(e.as_bytes());
        l
    });
    let piece = prop_oneof![
        6 => line,
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

/// Payloads as the gateway sends them: one line each (compact JSON has no raw newline).
fn arb_payload() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace(['\r', '\n'], ""))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_bytes_in_any_chunking_stay_within_the_limit(
        bytes in arb_stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        max in 0usize..48,
    ) {
        run(max, &split(&bytes, &cuts))?;
    }

    #[test]
    fn chunking_does_not_change_what_is_parsed(
        bytes in arb_stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        max in 0usize..48,
    ) {
        let whole = run(max, std::slice::from_ref(&bytes))?;
        let chunked = run(max, &split(&bytes, &cuts))?;
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn formatted_events_parse_back_in_any_chunking_and_line_ending(
        payloads in prop::collection::vec(arb_payload(), 0..6),
        ending in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let bytes: Vec<u8> = payloads
            .iter()
            .flat_map(|d| format_event(d.as_bytes()).to_vec())
            .collect();
        let bytes = String::from_utf8_lossy(&bytes).replace('\n', ending).into_bytes();
        // The tightest limit that admits every line: each payload and the event name.
        let max = payloads.iter().map(String::len).fold("message".len(), usize::max);
        let (events, refused) = run(max, &split(&bytes, &cuts))?;
        prop_assert!(!refused, "refused an event within the limit of {}", max);
        let data: Vec<String> = events.into_iter().map(|e| e.data).collect();
        prop_assert_eq!(data, payloads);
    }
}
