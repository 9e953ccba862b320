//! The log routes: the audit and error streams, from now on, as NDJSON.

use super::respond::event_stream;
use super::{Answer, Call};

pub(super) fn audit(call: &Call<'_>) -> Answer {
    event_stream(call.state.observer.subscribe_audit())
}

pub(super) fn errors(call: &Call<'_>) -> Answer {
    event_stream(call.state.observer.subscribe_errors())
}
