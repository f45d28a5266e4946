//! One pulled response stream per request: the engine's [`EventStream`]s, merged, drive an
//! endpoint's state machine ([`Endpoint`]), whose chunks are either written as server-sent
//! events ([`sse`]) or folded into the one JSON body ([`collect`]). Both paths run the same
//! machine over the same events, so a streamed and a non-streamed response cannot drift.
//!
//! No task or channel sits between the engine and the socket: the response body polls the
//! events itself. When the client goes away hyper drops the body, which drops the event
//! streams, which cancels the requests in the engine (queued, prefilling or decoding). When
//! the machine has finished every choice (a stop string can end one before the engine does)
//! the events are dropped at once, which cancels whatever the engine still runs.
//!
//! Both drivers hand every event to the response's [`ResponseRecorder`] before the machine
//! sees it: token counts, finish reasons and latencies are recorded here, once for every
//! endpoint.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use serde::Serialize;

use super::choice_text::{ChoiceText, Step};
use super::error::ApiError;
use super::metrics::ResponseRecorder;
use super::openai::{FinishReason, ResponseHeader, UsageBody};
use super::validate::Reply;
use crate::engine::{self, Event, EventStream, Finish};
use crate::tokenizer::Tokenizer;

/// Interval of `: keep-alive` comments on idle streams.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The events of a response's engine requests, each with the index of its request.
pub type Events = BoxStream<'static, (usize, Event)>;

/// Why a response could not be finished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A choice failed in the engine (a forward or sampling error, or the engine stopped).
    #[error("{0}")]
    Failed(String),
    /// The server shut down before the choice finished.
    #[error("the server shut down before the response was finished")]
    Shutdown,
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Failed(m) => ApiError::Internal(m),
            StreamError::Shutdown => ApiError::Draining,
        }
    }
}

/// An endpoint's response as a pure state machine over engine events.
pub trait Endpoint: Send + 'static {
    /// One streamed chunk.
    type Chunk: Serialize + Send + 'static;
    /// The non-streamed body.
    type Body: Serialize;
    /// Chunks before any event (role chunks, an echoed prompt).
    fn start(&mut self) -> Vec<Self::Chunk>;
    /// The chunks for `event` of engine request `source`.
    fn on(&mut self, source: usize, event: Event) -> Result<Vec<Self::Chunk>, StreamError>;
    /// Every choice has ended.
    fn is_finished(&self) -> bool;
    /// Chunks after every choice ended (the usage chunk, when asked for).
    fn end(&mut self) -> Vec<Self::Chunk>;
    /// The body the chunks add up to.
    fn fold(&self, chunks: Vec<Self::Chunk>) -> Self::Body;
    /// The chunks that end a response failed after its start (the Responses API's
    /// `response.failed`); none by default: the error itself goes out ([`chunks`]).
    fn failed(&mut self, _error: &ApiError) -> Vec<Self::Chunk> {
        Vec::new()
    }
}

/// The requests' streams as one, tagged with their index.
pub fn merge(streams: Vec<EventStream>) -> Events {
    stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.map(move |ev| (i, ev))),
    )
    .boxed()
}

/// The next event, unless `deadline` passes first.
async fn next(events: &mut Events, deadline: &Deadline) -> Result<(usize, Event), ApiError> {
    let next = match deadline.at {
        None => events.next().await,
        Some(at) => tokio::time::timeout_at(at.into(), events.next())
            .await
            .map_err(|_| ApiError::Timeout(deadline.limit))?,
    };
    next.ok_or_else(|| ApiError::Internal("the engine stopped".into()))
}

/// When a response must be done by (`--request-timeout`), and the limit to name in the error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deadline {
    pub at: Option<std::time::Instant>,
    pub limit: Duration,
}

impl Deadline {
    /// The deadline of a request that arrives now, under `limit` (`None`: no limit).
    pub fn after(limit: Option<Duration>) -> Self {
        Self {
            at: limit.map(|l| std::time::Instant::now() + l),
            limit: limit.unwrap_or_default(),
        }
    }
}

/// `events`, each shown to `recorder` as it passes; the recorder goes when the stream does.
fn observed(events: Events, mut recorder: ResponseRecorder) -> Events {
    events
        .map(move |(source, event)| {
            recorder.event(source, &event);
            (source, event)
        })
        .boxed()
}

/// Runs `machine` over `events` to the end and folds its chunks into the body. Past the
/// deadline the events are dropped (the engine frees the request) and the error returned.
pub async fn collect<E: Endpoint>(
    mut machine: E,
    events: Events,
    deadline: Deadline,
    recorder: ResponseRecorder,
) -> Result<E::Body, ApiError> {
    let mut events = observed(events, recorder);
    let mut chunks = machine.start();
    while !machine.is_finished() {
        let (source, event) = next(&mut events, &deadline).await?;
        chunks.extend(machine.on(source, event)?);
    }
    drop(events); // whatever the engine still runs for a finished response is cancelled
    chunks.extend(machine.end());
    Ok(machine.fold(chunks))
}

enum Phase {
    Start(Events),
    Events(Events),
    Done,
}

/// The response as server-sent events: the machine's chunks as `data:` lines, then
/// `data: [DONE]`. A failure after the first byte (the deadline passing among them) is one
/// `data: {"error": ...}` event, and the stream closes without `[DONE]`.
pub fn sse<E: Endpoint>(
    machine: E,
    events: Events,
    deadline: Deadline,
    recorder: ResponseRecorder,
) -> Response {
    let body = stream::unfold(
        (machine, Phase::Start(observed(events, recorder))),
        move |(mut m, phase)| async move {
            match phase {
                Phase::Done => None,
                Phase::Start(events) => Some((data(m.start()), (m, Phase::Events(events)))),
                Phase::Events(mut events) => {
                    if m.is_finished() {
                        drop(events);
                        let mut out = data(m.end());
                        out.push(SseEvent::default().data("[DONE]"));
                        return Some((out, (m, Phase::Done)));
                    }
                    let out = match next(&mut events, &deadline).await {
                        Ok((source, event)) => match m.on(source, event) {
                            Ok(chunks) => return Some((data(chunks), (m, Phase::Events(events)))),
                            Err(e) => ApiError::from(e),
                        },
                        Err(e) => e,
                    };
                    Some((vec![error_event(&out)], (m, Phase::Done)))
                }
            }
        },
    );
    let body = body.flat_map(stream::iter).map(Ok::<_, Infallible>);
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text(" keep-alive"))
        .into_response()
}

/// Chunks as `data:` events.
fn data<T: Serialize>(chunks: Vec<T>) -> Vec<SseEvent> {
    chunks
        .iter()
        .map(|c| match serde_json::to_string(c) {
            Ok(json) => SseEvent::default().data(json),
            Err(e) => error_event(&ApiError::Internal(format!("encoding a chunk: {e}"))),
        })
        .collect()
}

fn error_event(e: &ApiError) -> SseEvent {
    SseEvent::default().data(e.body().to_string())
}

/// The machine's chunks over `events` as one stream (for endpoints whose chunks are sent as
/// they are made, and whose machine ends a failed response itself): its start chunks, each
/// event's, its end chunks. A failure (the engine's, the deadline's) ends the stream with the
/// machine's [`Endpoint::failed`] chunks, or with the error when it has none. The events are
/// dropped once the machine has finished (the engine frees what it still runs).
pub fn chunks<E: Endpoint>(
    machine: E,
    events: Events,
    deadline: Deadline,
    recorder: ResponseRecorder,
) -> BoxStream<'static, Result<E::Chunk, ApiError>> {
    let body = stream::unfold(
        (machine, Phase::Start(observed(events, recorder))),
        move |(mut m, phase)| async move {
            let ok = |chunks: Vec<E::Chunk>| chunks.into_iter().map(Ok).collect::<Vec<_>>();
            match phase {
                Phase::Done => None,
                Phase::Start(events) => Some((ok(m.start()), (m, Phase::Events(events)))),
                Phase::Events(mut events) => {
                    if m.is_finished() {
                        drop(events);
                        return Some((ok(m.end()), (m, Phase::Done)));
                    }
                    let e = match next(&mut events, &deadline).await {
                        Ok((source, event)) => match m.on(source, event) {
                            Ok(chunks) => return Some((ok(chunks), (m, Phase::Events(events)))),
                            Err(e) => ApiError::from(e),
                        },
                        Err(e) => e,
                    };
                    drop(events);
                    let out = match m.failed(&e) {
                        failed if failed.is_empty() => vec![Err(e)],
                        failed => ok(failed),
                    };
                    Some((out, (m, Phase::Done)))
                }
            }
        },
    );
    body.flat_map(stream::iter).boxed()
}

/// Named server-sent events: each item as `event: <name>` and `data: <json>`, no `[DONE]`
/// (the Responses API's framing; its last event says the response ended).
pub fn sse_named<T: Serialize + Send + 'static>(
    items: BoxStream<'static, T>,
    name: fn(&T) -> &'static str,
) -> Response {
    let body = items.map(move |item| {
        let event = match serde_json::to_string(&item) {
            Ok(json) => SseEvent::default().event(name(&item)).data(json),
            Err(e) => error_event(&ApiError::Internal(format!("encoding an event: {e}"))),
        };
        Ok::<_, Infallible>(event)
    });
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text(" keep-alive"))
        .into_response()
}

/// What an endpoint machine starts from: the response's header fields, the tokenizer for
/// token texts, the reply options and the prompt tokens of all its requests.
#[derive(Debug, Clone)]
pub struct Meta {
    pub header: ResponseHeader,
    pub tokenizer: Arc<Tokenizer>,
    pub reply: Reply,
    pub prompt_tokens: usize,
}

/// Usage summed over a response's choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCount {
    pub prompt: usize,
    pub completion: usize,
    /// The largest prefix-cache hit of any choice.
    pub cached: usize,
}

impl UsageCount {
    fn add(&mut self, completion: usize, cached: usize) {
        self.completion += completion;
        self.cached = self.cached.max(cached);
    }

    /// Choice `text` past a generated token; a choice a stop string ends here counts the
    /// tokens it has so far.
    pub fn token(&mut self, text: &mut ChoiceText, id: u32) -> Step {
        let step = text.token(id);
        if step.finish.is_some() {
            self.add(text.generated(), 0);
        }
        step
    }

    /// Choice `text` at the engine's end: its usage counted, the reason as the wire names it.
    /// An engine shut down before the choice finished is an error, never a finish reason.
    pub fn finish(&mut self, text: &mut ChoiceText, finish: Finish) -> Result<Step, StreamError> {
        let reason = match finish.reason {
            engine::FinishReason::Stop => FinishReason::Stop,
            engine::FinishReason::Length => FinishReason::Length,
            engine::FinishReason::Shutdown => return Err(StreamError::Shutdown),
        };
        let u = finish.usage;
        self.add(u.completion_tokens, u.cached_tokens);
        Ok(text.finish(reason))
    }

    pub fn body(&self) -> UsageBody {
        UsageBody::new(self.prompt, self.completion, self.cached)
    }
}

/// Fixtures the endpoint machines' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::engine::{Timings, Usage};
    use crate::tokenizer::testing::byte_level;

    /// A recorder into a throwaway registry.
    pub fn recorder() -> ResponseRecorder {
        ResponseRecorder::new(Arc::new(crate::api::metrics::Metrics::new("m")))
    }

    /// [`sse`] with no deadline and a throwaway recorder.
    pub fn sse_now<E: Endpoint>(machine: E, events: Events) -> Response {
        sse(machine, events, Deadline::default(), recorder())
    }

    /// [`collect`] with no deadline and a throwaway recorder.
    pub async fn collect_now<E: Endpoint>(machine: E, events: Events) -> Result<E::Body, ApiError> {
        collect(machine, events, Deadline::default(), recorder()).await
    }

    /// One char per token, all of printable ASCII (the machines need no model).
    pub fn tokenizer() -> Arc<Tokenizer> {
        Arc::new(byte_level(128))
    }

    pub fn meta(id: &str, object: &'static str, reply: Reply, prompt_tokens: usize) -> Meta {
        Meta {
            header: ResponseHeader {
                id: id.into(),
                object,
                created: 7,
                model: "m".into(),
                system_fingerprint: "fp".into(),
            },
            tokenizer: tokenizer(),
            reply,
            prompt_tokens,
        }
    }

    /// Choice `index` ended by the engine with `completion` tokens, `cached` from the cache.
    pub fn finished(
        index: usize,
        reason: engine::FinishReason,
        completion: usize,
        cached: usize,
    ) -> Event {
        Event::Finished {
            index,
            finish: Finish {
                reason,
                usage: Usage {
                    prompt_tokens: 3,
                    completion_tokens: completion,
                    cached_tokens: cached,
                },
                timings: Timings::default(),
            },
        }
    }
}
