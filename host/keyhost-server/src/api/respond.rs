//! Responses: JSON (with secrets in wiped buffers), v0.16's JSON with its newline
//! and Go's content type, NDJSON listings with trailers, and event streams.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::body::{Wiped, Wiping};
use crate::error::ApiError;

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A JSON answer that carries secrets (data keys, plaintexts): serialized without
/// an intermediate `serde_json::Value`, into a [`Wiping`] buffer that is wiped when
/// the response body is dropped.
pub(super) fn secret_json(value: &impl Serialize) -> Result<Response<Body>, ApiError> {
    let mut buf = Wiping(Zeroizing::new(Vec::with_capacity(256)));
    serde_json::to_writer(&mut buf, value).map_err(|_| ApiError::MalformedKey)?;
    let mut response = Response::new(full(Bytes::from_owner(Wiped(buf.0))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) fn ok<T: Serialize>(value: &T) -> Result<Response<Body>, ApiError> {
    Ok(json_response(StatusCode::OK, value))
}

/// The content type Go gives a body it was not told the type of (KES v0.16's
/// JSON answers).
pub(super) const GO_TEXT: &str = "text/plain; charset=utf-8";

/// A response of `bytes` typed `content_type`.
pub(super) fn typed(bytes: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON answer as KES v0.16 wrote it (`json.NewEncoder(w).Encode`): a trailing
/// newline, and Go's sniffed content type. Bodies that carry secrets stay in
/// wiped buffers.
pub(super) fn v016_json(response: Response<Body>) -> Response<Body> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    if !is_json || response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(GO_TEXT));
    Response::from_parts(
        parts,
        BodyExt::boxed(WithNewline {
            inner: body,
            done: false,
        }),
    )
}

/// A body, then `\n`, with an exact size when the body's is known (so that the
/// answer keeps its `Content-Length`). The inner bytes pass through as they are:
/// a secret in a wiped buffer stays in it.
struct WithNewline {
    inner: Body,
    done: bool,
}

impl hyper::body::Body for WithNewline {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        use std::task::Poll;
        if !self.done {
            match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(None) => {}
                other => return other,
            }
            self.done = true;
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"\n")))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let inner = self.inner.size_hint();
        let mut hint = hyper::body::SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(u64::from(!self.done)));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(u64::from(!self.done)));
        }
        hint
    }
}

pub(super) fn empty() -> Result<Response<Body>, ApiError> {
    Ok(Response::new(full(Bytes::new())))
}

/// A finished NDJSON listing as KES v0.16 sent it: lines, then the trailers
/// `Status: 200` and an empty `Error`.
pub(super) fn ndjson_with_trailers(lines: Vec<String>) -> Result<Response<Body>, ApiError> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("status", HeaderValue::from_static("200"));
    trailers.insert("error", HeaderValue::from_static(""));
    let frames = lines
        .into_iter()
        .map(|line| Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(line))))
        .chain(std::iter::once(Ok(hyper::body::Frame::trailers(trailers))));
    let mut response = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(futures::stream::iter(
        frames,
    ))));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    headers.insert(header::TRAILER, HeaderValue::from_static("Status,Error"));
    Ok(response)
}

/// An NDJSON stream of the events a channel carries, from now on, until the client
/// goes away.
pub(super) fn event_stream(rx: tokio::sync::broadcast::Receiver<Bytes>) -> Result<Response<Body>, ApiError> {
    use tokio::sync::broadcast::error::RecvError;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => return Some((Ok::<_, Infallible>(hyper::body::Frame::data(line)), rx)),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let mut response = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(stream)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

/// Policy rules as the newest KES writes them: an object keyed by pattern.
pub(super) fn rules(list: &[keyhost_policy::Pattern]) -> Value {
    Value::Object(list.iter().map(|p| (p.as_str().to_owned(), json!({}))).collect())
}

/// A time as Go's JSON encoding writes it; the zero time for "unknown", as KES.
pub(super) fn rfc3339(t: Option<time::OffsetDateTime>) -> String {
    t.and_then(|t| {
        t.to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned())
}
