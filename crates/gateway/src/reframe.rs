//! A body rewritten frame by frame: the pump under the protocol layer's
//! stream translations and Bedrock's event-stream decoding. Each upstream
//! data frame goes to a [`Reframe`], which queues what it becomes; the
//! queue is sent before the upstream is read again, and once the
//! [`Reframe`] says the body has ended, nothing more is read.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use crate::upstream::{BoxError, UpBody};

/// What a [`Reframed`] body makes of its upstream's data.
pub(crate) trait Reframe {
    /// Takes one upstream data frame, queueing in `out` the frames it
    /// becomes; answers whether the body has ended.
    fn data(&mut self, data: &[u8], out: &mut VecDeque<Bytes>) -> bool;

    /// The upstream ended: queues in `out` what is left to send.
    fn end(&mut self, out: &mut VecDeque<Bytes>);
}

/// `inner`'s frames rewritten by a [`Reframe`]. An upstream error is passed
/// on and ends the body; trailers are dropped.
pub(crate) struct Reframed<T> {
    inner: UpBody,
    reframe: T,
    out: VecDeque<Bytes>,
    ended: bool,
}

impl<T: Reframe + Send + Unpin + 'static> Reframed<T> {
    pub(crate) fn boxed(inner: UpBody, reframe: T) -> UpBody {
        Reframed {
            inner,
            reframe,
            out: VecDeque::new(),
            ended: false,
        }
        .boxed_unsync()
    }
}

impl<T: Reframe + Unpin> Body for Reframed<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.ended = this.reframe.data(&data, &mut this.out);
                    }
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    this.reframe.end(&mut this.out);
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
