//! What the engine tells a caller about one request: [`Event`]s on an [`EventStream`].
//!
//! The worker thread sends; the caller's task (or thread) receives. The engine speaks token ids
//! only: turning ids into text, stop strings and tool calls is the API layer's business. Sends
//! never block the worker (the channel is unbounded, bounded in practice by `max_tokens`), and
//! dropping the stream is how a caller cancels: the worker sees the closed channel at its next
//! step and frees the request's sequences and blocks, queued, prefilling or decoding.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

pub use crate::sampling::{Token, TokenLogprob};

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token came, or the output grammar completed.
    Stop,
    /// `max_tokens` or the context length reached (or, scoring only, the prompt scored).
    Length,
    /// The engine shut down past its grace period before the choice could finish.
    Shutdown,
}

/// Token counts of one choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Generated tokens, the stop token included.
    pub completion_tokens: usize,
    /// Prompt tokens whose K/V came from the prefix cache.
    pub cached_tokens: usize,
}

/// Where one choice's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Submit to first admission.
    pub queued: Duration,
    /// Submit to first token.
    pub ttft: Duration,
    /// Submit to finish.
    pub total: Duration,
}

/// The end of one choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    pub reason: FinishReason,
    pub usage: Usage,
    pub timings: Timings,
}

/// What a request's stream yields. `index` is the choice (0..n).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt's tokens, scored (only when the request asked for prompt logprobs): once,
    /// before any choice's first token, since the prompt is every choice's. The first token has
    /// no logprob (nothing predicts it).
    PromptScores { tokens: Vec<Token> },
    /// Choice `index` generated `token` (a stop token is never sent: it ends the choice).
    Token { index: usize, token: Token },
    /// Choice `index` ended.
    Finished { index: usize, finish: Finish },
    /// Choice `index` failed (a forward or sampling error, or the engine went away); the
    /// engine lives on.
    Failed { index: usize, error: String },
}

/// The sending half, held by the worker.
pub(crate) type EventSender = mpsc::UnboundedSender<Event>;

/// The events of one request, until every choice has finished or failed. Dropping it cancels
/// the request.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
    /// Choices that have not finished or failed yet.
    open: usize,
}

impl EventStream {
    pub(crate) fn new(n: usize) -> (EventSender, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Self { rx, open: n })
    }

    /// The next event; `None` once every choice has finished or failed.
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event, blocking the calling thread (not for use inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        if self.open == 0 {
            return None;
        }
        let ev = self.rx.blocking_recv();
        self.count(ev)
    }

    /// The next event if one is ready (for tests that step the worker by hand).
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Result<Event, mpsc::error::TryRecvError> {
        let ev = self.rx.try_recv()?;
        Ok(self
            .count(Some(ev))
            .expect("invariant: an event was received"))
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.open == 0 {
            return Poll::Ready(None);
        }
        self.rx.poll_recv(cx).map(|ev| self.count(ev))
    }

    fn count(&mut self, ev: Option<Event>) -> Option<Event> {
        match ev {
            // The worker went away without finishing us: say so rather than end quietly.
            None => (std::mem::take(&mut self.open) > 0).then(|| Event::Failed {
                index: 0,
                error: "the engine stopped".into(),
            }),
            Some(ev) => {
                if matches!(ev, Event::Finished { .. } | Event::Failed { .. }) {
                    self.open = self.open.saturating_sub(1);
                }
                Some(ev)
            }
        }
    }
}

impl futures_util::Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish() -> Finish {
        Finish {
            reason: FinishReason::Stop,
            usage: Usage::default(),
            timings: Timings::default(),
        }
    }

    #[test]
    fn the_stream_ends_after_every_choice_finished_or_failed() {
        let (tx, mut rx) = EventStream::new(2);
        tx.send(Event::Finished {
            index: 1,
            finish: finish(),
        })
        .expect("send");
        tx.send(Event::Failed {
            index: 0,
            error: "x".into(),
        })
        .expect("send");
        tx.send(Event::Finished {
            index: 0,
            finish: finish(),
        })
        .expect("send");
        assert!(matches!(rx.blocking_recv(), Some(Event::Finished { .. })));
        assert!(matches!(rx.blocking_recv(), Some(Event::Failed { .. })));
        assert_eq!(
            rx.blocking_recv(),
            None,
            "nothing after the last choice ended"
        );
    }

    #[test]
    fn a_worker_gone_before_the_end_is_one_failure() {
        let (tx, mut rx) = EventStream::new(1);
        drop(tx);
        assert!(
            matches!(rx.blocking_recv(), Some(Event::Failed { error, .. }) if error.contains("stopped"))
        );
        assert_eq!(rx.blocking_recv(), None);
    }
}
