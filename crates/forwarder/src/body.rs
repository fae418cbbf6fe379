//! The invocation's body as the runtime received it, read in place.
//!
//! lambda_runtime's typed handlers take an owned payload: every image of a
//! stream batch would be copied out of the body (and each map key through
//! `serde_path_to_error`) before the handler runs. The forwarder only
//! copies images onto the queue, so it reads them where they are:
//! [`RawBody`] is a layer on the runtime that takes each invocation's body
//! and hands the runtime `null` in its place (the handler's payload is
//! `()`); the handler takes the body back by request id and reads it with
//! [`read_body`]. Everything else (the response or error sent back, panics
//! caught, tracing) stays lambda_runtime's.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use lambda_runtime::tower::Layer;
use lambda_runtime::{Diagnostic, LambdaInvocation, Service};
use relay_core::stream::{self, StreamEvent};
use serde_json::error::Category;

/// Takes each invocation's body before the runtime reads it; the handler
/// gets it back with [`RawBody::take`].
#[derive(Clone, Default)]
pub struct RawBody {
    slot: Arc<Mutex<Option<(String, Bytes)>>>,
}

impl RawBody {
    /// The body of invocation `request_id`, once. `None` when the layer did
    /// not see that invocation (a wiring error: the invocation fails, and
    /// Lambda retries it).
    pub fn take(&self, request_id: &str) -> Option<Bytes> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.take() {
            Some((id, body)) if id == request_id => Some(body),
            other => {
                *slot = other;
                None
            }
        }
    }

    fn put(&self, request_id: String, body: Bytes) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Some((request_id, body));
    }
}

/// The request id and the body's length: never the body (customer data).
impl fmt::Debug for RawBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref() {
            Some((id, body)) => write!(f, "RawBody({id}: {} bytes)", body.len()),
            None => f.write_str("RawBody(empty)"),
        }
    }
}

impl<S> Layer<S> for RawBody {
    type Service = TakeBody<S>;
    fn layer(&self, inner: S) -> TakeBody<S> {
        TakeBody {
            inner,
            body: self.clone(),
        }
    }
}

/// [`RawBody`]'s service: the invocation goes on with `null` for a body.
#[derive(Debug)]
pub struct TakeBody<S> {
    inner: S,
    body: RawBody,
}

impl<S: Service<LambdaInvocation>> Service<LambdaInvocation> for TakeBody<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> S::Future {
        let body = std::mem::replace(&mut invocation.body, Bytes::from_static(b"null"));
        self.body.put(invocation.context.request_id.clone(), body);
        self.inner.call(invocation)
    }
}

/// Reads a stream batch in place (its images borrow from `body`): in one
/// pass when [`stream::read`] is sure of it, else by serde_json, which
/// reads the same batches and gives every error.
pub fn read_body(body: &[u8]) -> Result<StreamEvent<'_>, BodyError> {
    if let Some(event) = std::str::from_utf8(body).ok().and_then(stream::read) {
        return Ok(event);
    }
    serde_json::from_slice(body).map_err(|error| {
        // Read again, only now, for where it failed.
        let de = &mut serde_json::Deserializer::from_slice(body);
        let path = match serde_path_to_error::deserialize::<_, StreamEvent<'_>>(de) {
            Err(e) => e.path().to_string(),
            Ok(_) => ".".to_string(),
        };
        BodyError { path, error }
    })
}

/// A body that is not a stream batch the forwarder reads. Every way it is
/// shown (`Display`, `Debug`, the invocation's [`Diagnostic`]) says where
/// and what kind of error, never a value of the batch; it has no `source`,
/// since serde's own error quotes values.
pub struct BodyError {
    path: String,
    error: serde_json::Error,
}

impl fmt::Display for BodyError {
    /// Where, and what kind of error; serde's own words only when they
    /// cannot hold a value (they quote a wrong value, and values are
    /// customer data).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.error;
        write!(
            f,
            "the invocation is not a DynamoDB stream batch the forwarder reads: at [{}] ",
            self.path
        )?;
        let text = e.to_string();
        let ours = ["missing field", "an image is not DynamoDB JSON"];
        if e.classify() != Category::Data || ours.iter().any(|p| text.starts_with(p)) {
            f.write_str(&text)
        } else {
            write!(
                f,
                "a value of the wrong type or form at line {} column {}",
                e.line(),
                e.column()
            )
        }
    }
}

impl fmt::Debug for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BodyError({self})")
    }
}

impl std::error::Error for BodyError {}

/// What the runtime posts to Lambda (and logs) for the invocation.
impl From<BodyError> for Diagnostic {
    fn from(e: BodyError) -> Diagnostic {
        Diagnostic {
            error_type: "InvalidStreamBatch".to_string(),
            error_message: e.to_string(),
        }
    }
}

/// The invocation's error when [`RawBody`] has no body for it.
pub fn no_body() -> Diagnostic {
    Diagnostic {
        error_type: "NoInvocationBody".to_string(),
        error_message: "the forwarder was handed no body for this invocation (RawBody is not a layer of its runtime)".to_string(),
    }
}

#[cfg(test)]
mod tests;
