//! Timeouts on an upstream answer's body: its first byte within a
//! provider's `first_byte_timeout_ms` of sending the request
//! ([`first_byte`]), and no silence between two chunks longer than its
//! `idle_timeout_ms` ([`idle`]).
//!
//! The first is awaited before anything reaches the client, so missing it
//! is a failed attempt the request may retry. The second is a body wrapper
//! with one timer, reset by each chunk: it ends the body with
//! [`IdleTimeout`], which the relay tells apart from other cut-offs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::upstream::{BoxError, UpBody};

/// The error an [`idle`] body ends with when its upstream went silent.
#[derive(Debug, thiserror::Error)]
#[error("upstream body idle for longer than {0:?}")]
pub struct IdleTimeout(pub Duration);

/// Whether `e`, or an error it wraps, is an [`IdleTimeout`].
pub fn is_idle_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<IdleTimeout>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// `body`, ended with an [`IdleTimeout`] error once no frame came for
/// `limit`; the timer starts now.
pub fn idle(body: UpBody, limit: Duration) -> UpBody {
    Idle {
        inner: body,
        limit,
        timer: Box::pin(tokio::time::sleep(limit)),
        timed_out: false,
    }
    .boxed_unsync()
}

struct Idle {
    inner: UpBody,
    limit: Duration,
    /// One timer for the whole body, moved forward by each frame.
    timer: Pin<Box<Sleep>>,
    timed_out: bool,
}

impl Body for Idle {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let limit = this.limit;
                this.timer.as_mut().reset(Instant::now() + limit);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.timed_out = true;
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(this.limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why [`first_byte`] gave up.
#[derive(Debug)]
pub enum FirstByteError {
    /// No byte came by the deadline.
    Timeout,
    /// The body failed before its first byte.
    Broken(BoxError),
}

/// Waits until `body`'s first byte (its first non-empty data frame, or its
/// end) or `deadline`, whichever is first, and gives back the body whole,
/// that frame included.
pub async fn first_byte(mut body: UpBody, deadline: Instant) -> Result<UpBody, FirstByteError> {
    let first = loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(FirstByteError::Timeout),
            Ok(None) => break None,
            Ok(Some(Err(e))) => return Err(FirstByteError::Broken(e)),
            Ok(Some(Ok(frame))) => {
                if frame.data_ref().is_some_and(Bytes::is_empty) {
                    continue;
                }
                break Some(frame);
            }
        }
    };
    Ok(Primed { first, inner: body }.boxed_unsync())
}

/// A body whose first frame was read ahead.
struct Primed {
    first: Option<Frame<Bytes>>,
    inner: UpBody,
}

impl Body for Primed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // The inner body's hint may still count the frame read ahead.
        match self.first {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;

    /// A body of `chunks`, each after its delay.
    fn paced(chunks: Vec<(u64, &'static str)>) -> UpBody {
        let frames = stream::unfold(chunks.into_iter(), |mut rest| async move {
            let (delay, text) = rest.next()?;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(text.as_bytes()))),
                rest,
            ))
        });
        StreamBody::new(frames).boxed_unsync()
    }

    async fn drain(mut body: UpBody) -> (String, Option<BoxError>) {
        let mut text = String::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => text.push_str(std::str::from_utf8(&f.into_data().unwrap()).unwrap()),
                Err(e) => return (text, Some(e)),
            }
        }
        (text, None)
    }

    // The limits are far from the gaps either way, so a slow machine
    // cannot turn one case into the other.
    #[tokio::test]
    async fn idle_passes_a_steady_body_and_cuts_a_silent_one() {
        let steady = idle(
            paced(vec![(0, "a"), (5, "b"), (5, "c"), (5, "d")]),
            Duration::from_millis(2_000),
        );
        let (text, error) = drain(steady).await;
        assert_eq!(text, "abcd", "each gap is under the limit");
        assert!(error.is_none());

        let stalled = idle(
            paced(vec![(0, "a"), (5, "b"), (60_000, "c")]),
            Duration::from_millis(100),
        );
        let (text, error) = drain(stalled).await;
        assert_eq!(text, "ab");
        let error = error.expect("an idle timeout");
        assert!(is_idle_timeout(error.as_ref()), "{error}");
    }

    #[tokio::test]
    async fn first_byte_waits_for_data_and_keeps_it() {
        let deadline = Instant::now() + Duration::from_millis(5_000);
        let body = first_byte(paced(vec![(0, ""), (10, "a"), (10, "b")]), deadline)
            .await
            .unwrap();
        assert_eq!(drain(body).await.0, "ab", "the frame read ahead is kept");

        let deadline = Instant::now() + Duration::from_millis(100);
        let late = first_byte(paced(vec![(60_000, "a")]), deadline).await;
        assert!(matches!(late, Err(FirstByteError::Timeout)));
    }
}
