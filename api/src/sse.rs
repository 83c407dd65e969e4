//! Server-Sent Events responses: the event stream and a followed log are
//! each one long `text/event-stream` response whose frames a producer task
//! writes into a small channel. Framing is russe's (the encoder behind
//! actix-web-lab's `sse`), so ids, event names and multi-line data follow
//! the specification.
//!
//! A response opens with a `retry:` hint, then the producer's frames, with
//! a `: keep-alive` comment every [`KEEP_ALIVE`] (proxies and browsers
//! drop silent connections). It ends
//! when the producer returns, when the client goes away (the next write
//! fails, a keep-alive at the latest) or when the server begins to stop.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::header;
use actix_web::web::Bytes;
use russe::{Event, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const CONTENT_TYPE: &str = "text/event-stream";
/// A comment after this long without a frame.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What a client waits before it reconnects (EventSource honours it).
pub const RETRY: Duration = Duration::from_secs(2);
/// Frames a slow client may have waiting before its producer waits too.
const BUFFERED_FRAMES: usize = 32;

/// One `message` frame: `id:`, `event:`, then `data:` (one line per line of
/// `data`).
pub fn message(event: &str, id: Option<String>, data: impl Into<String>) -> Bytes {
    let message = Message {
        data: data.into().into(),
        event: Some(event.into()),
        retry: None,
        id: id.map(Into::into),
    };
    encode(Event::Message(message))
}

fn encode(event: Event) -> Bytes {
    event
        .into_bytestring()
        .expect("ids and event names are plain ASCII without line breaks")
        .into_bytes()
}

/// Where a producer writes its frames.
#[derive(Clone)]
pub struct Sink {
    frames: mpsc::Sender<Bytes>,
}

/// The client went away.
#[derive(Debug)]
pub struct Closed;

impl Sink {
    pub async fn send(&self, frame: Bytes) -> Result<(), Closed> {
        self.frames.send(frame).await.map_err(|_| Closed)
    }
}

/// The response body: what the producer wrote, in order.
struct Frames(mpsc::Receiver<Bytes>);

impl futures_core::Stream for Frames {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// A `text/event-stream` response fed by `produce`, which runs on its own
/// task until it returns, the client goes away or `stop` is cancelled.
pub fn respond<Fut>(stop: &CancellationToken, produce: impl FnOnce(Sink) -> Fut) -> HttpResponse
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(BUFFERED_FRAMES);
    let _ = tx.try_send(encode(Event::Retry(RETRY)));
    let done = stop.child_token();
    let producer = produce(Sink { frames: tx.clone() });
    tokio::spawn({
        let done = done.clone();
        async move {
            tokio::select! {
                _ = producer => {}
                _ = done.cancelled() => {}
            }
            done.cancel();
        }
    });
    tokio::spawn(async move {
        let keep_alive = encode(Event::Comment("keep-alive".into()));
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    if tx.send(keep_alive.clone()).await.is_err() {
                        done.cancel();
                        return;
                    }
                }
            }
        }
    });
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Tells a buffering reverse proxy (nginx) to pass frames at once.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(Frames(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_its_id_event_and_every_line_of_its_data() {
        let frame = message("line", Some("7".into()), "one\ntwo");
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            "id: 7\nevent: line\ndata: one\ndata: two\n\n"
        );
        let plain = message("gap", None, "{}");
        assert_eq!(
            std::str::from_utf8(&plain).unwrap(),
            "event: gap\ndata: {}\n\n"
        );
    }
}
