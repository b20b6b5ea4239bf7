//! The request-body layer every listener's router is wrapped in: it notes
//! whether a request's body was read to its end and, when the answer comes
//! before that (a 401, 413 or 415 refusal), adds `Connection: close`. hyper
//! closes such a connection after the answer anyway, since the unread rest of
//! the body stands between it and the next request; the header tells a
//! keep-alive client so, and it reconnects instead of failing its next
//! request. The layer also applies the listener's body timeout, if any.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;
use tower::{Layer, Service};

/// The error a body read gets once the body timeout has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// Wraps a service; see the module's documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestBodyLayer {
    timeout: Option<Duration>,
}

impl RequestBodyLayer {
    /// `timeout`: how long the whole body may take, from when the request
    /// reaches the service; `None` for no limit here.
    pub fn new(timeout: Option<Duration>) -> Self {
        RequestBodyLayer { timeout }
    }
}

impl<S> Layer<S> for RequestBodyLayer {
    type Service = RequestBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBodyService {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service [`RequestBodyLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequestBodyService<S> {
    inner: S,
    timeout: Option<Duration>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for RequestBodyService<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let read_to_end = Arc::new(AtomicBool::new(body.is_end_stream()));
        let body = Body::new(WatchedBody {
            inner: body,
            read_to_end: read_to_end.clone(),
            deadline: self.timeout.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
        });
        let answer = self.inner.call(Request::from_parts(parts, body));
        Box::pin(async move {
            let mut response = answer.await?;
            if !read_to_end.load(Ordering::Acquire) {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        })
    }
}

pin_project_lite::pin_project! {
    /// A request body that notes when it has been read to its end and fails
    /// once its deadline passes.
    struct WatchedBody {
        #[pin]
        inner: Body,
        read_to_end: Arc<AtomicBool>,
        deadline: Option<(Duration, Pin<Box<Sleep>>)>,
    }
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(None) => {
                this.read_to_end.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                // A body of known length is at its end after its last byte,
                // even if nobody polls it once more for the `None`.
                if frame.is_ok() && this.inner.is_end_stream() {
                    this.read_to_end.store(true, Ordering::Release);
                }
                Poll::Ready(Some(frame))
            }
            Poll::Pending => {
                if let Some((limit, sleep)) = this.deadline {
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(*limit)))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.read_to_end.store(true, Ordering::Release);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
