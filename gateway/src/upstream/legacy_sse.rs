//! The legacy HTTP+SSE transport (protocol 2024-11-05) as a connection: a GET opens
//! the event stream, whose first `endpoint` event names the URL to POST messages to;
//! replies and server messages arrive on the stream.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use url::Url;

use super::channel::LinkHandle;
use super::sse;
use super::UpstreamError;

/// Opens the stream, waits for the `endpoint` event, and starts the reader and writer.
pub async fn connect(
    client: reqwest::Client,
    url: &Url,
    extra: &[(http::HeaderName, HeaderValue)],
    timeout: Duration,
) -> Result<LinkHandle, UpstreamError> {
    let mut headers = HeaderMap::new();
    for (k, v) in extra {
        headers.insert(k.clone(), v.clone());
    }
    let mut body = open_stream(&client, url, &headers, timeout).await?;
    let mut parser = sse::Parser::new(super::http::MAX_MESSAGE);
    let post_url = read_endpoint(&mut body, &mut parser, url, timeout).await?;

    let (out_tx, out_rx) = mpsc::channel::<Bytes>(1024);
    let (in_tx, in_rx) = mpsc::channel::<Value>(1024);
    let (done_tx, done_rx) = oneshot::channel::<String>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(post_messages(client, post_url, headers, timeout, out_rx));
    tokio::spawn(read_events(body, parser, in_tx, stop_rx, done_tx));
    Ok(LinkHandle {
        out: out_tx,
        incoming: in_rx,
        done: done_rx,
        stop: Some(stop_tx),
    })
}

/// The GET that opens the event stream; a non-2xx answer is an error.
async fn open_stream(
    client: &reqwest::Client,
    url: &Url,
    headers: &HeaderMap,
    timeout: Duration,
) -> Result<impl Stream<Item = reqwest::Result<Bytes>> + Unpin + Send + 'static, UpstreamError> {
    let resp = tokio::time::timeout(
        timeout,
        client
            .get(url.clone())
            .headers(headers.clone())
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .map_err(|_| UpstreamError::Timeout(timeout))?
    .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(UpstreamError::Status {
            status: resp.status().as_u16(),
            body: "opening the SSE stream".into(),
        });
    }
    Ok(resp.bytes_stream())
}

/// The first event must be `endpoint`: the URL to POST to, on the stream's origin.
async fn read_endpoint<S>(
    body: &mut S,
    parser: &mut sse::Parser,
    url: &Url,
    timeout: Duration,
) -> Result<Url, UpstreamError>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    let post_url = tokio::time::timeout(timeout, async {
        loop {
            if let Some(ev) = parser
                .next_event()
                .map_err(|_| UpstreamError::Protocol("oversized SSE event".into()))?
            {
                if ev.event.as_deref() == Some("endpoint") {
                    return url
                        .join(ev.data.trim())
                        .map_err(|e| UpstreamError::Protocol(format!("bad endpoint event: {e}")));
                }
                continue;
            }
            match body.next().await {
                Some(Ok(chunk)) => parser.push(&chunk),
                Some(Err(e)) => return Err(UpstreamError::Protocol(e.to_string())),
                None => return Err(UpstreamError::Closed),
            }
        }
    })
    .await
    .map_err(|_| UpstreamError::Timeout(timeout))??;
    if post_url.origin() != url.origin() {
        return Err(UpstreamError::Protocol(format!(
            "endpoint {post_url} is on another origin than {url}"
        )));
    }
    Ok(post_url)
}

/// Writer: each message is one POST; several may be in flight.
async fn post_messages(
    writer_client: reqwest::Client,
    post_url: Url,
    headers: HeaderMap,
    timeout: Duration,
    mut out_rx: mpsc::Receiver<Bytes>,
) {
    while let Some(msg) = out_rx.recv().await {
        let (c, u, h) = (writer_client.clone(), post_url.clone(), headers.clone());
        tokio::spawn(async move {
            let r = c
                .post(u)
                .headers(h)
                .header("content-type", "application/json")
                .body(msg)
                .timeout(timeout)
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "legacy SSE backend: POST failed");
            }
        });
    }
}

/// Reader: `message` events to `in_tx` until the stream ends or the gateway stops it;
/// then says how it ended on `done_tx`.
async fn read_events<S>(
    mut body: S,
    mut parser: sse::Parser,
    in_tx: mpsc::Sender<Value>,
    mut stop_rx: oneshot::Receiver<()>,
    done_tx: oneshot::Sender<String>,
) where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    let how = loop {
        while let Ok(Some(ev)) = parser.next_event() {
            if ev.event.as_deref().unwrap_or("message") != "message" {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                if in_tx.send(v).await.is_err() {
                    break;
                }
            }
        }
        tokio::select! {
            chunk = body.next() => match chunk {
                Some(Ok(c)) => parser.push(&c),
                Some(Err(e)) => break format!("stream failed: {e}"),
                None => break "closed its event stream".to_string(),
            },
            _ = &mut stop_rx => break "stopped by the gateway".to_string(),
        }
    };
    drop(in_tx);
    let _ = done_tx.send(how);
}
