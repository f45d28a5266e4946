//! The bounded admission queue, as a type: [`Admission::try_reserve`] takes a place (one
//! request and its prompt tokens) or fails at once with [`QueueFull`]; the [`Ticket`] it
//! returns gives the place back when it is dropped, so a place is returned exactly once
//! whichever way the request leaves the queue: admitted, cancelled, failed or shut down.
//!
//! Callers reserve on any thread; the worker drops tickets on its own. Lock-free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Requests and prompt tokens waiting for admission, against their limits.
#[derive(Debug)]
pub struct Admission {
    max_requests: usize,
    max_tokens: usize,
    requests: AtomicUsize,
    tokens: AtomicUsize,
}

/// The queue had no room; the message says which limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the queue is full ({0}); retry later")]
pub struct QueueFull(pub String);

/// A place in the queue, given back on drop.
#[derive(Debug)]
pub struct Ticket {
    queue: Arc<Admission>,
    tokens: usize,
}

impl Admission {
    pub fn new(max_requests: usize, max_tokens: usize) -> Arc<Self> {
        Arc::new(Self {
            max_requests,
            max_tokens,
            requests: AtomicUsize::new(0),
            tokens: AtomicUsize::new(0),
        })
    }

    /// A place for one request of `tokens` prompt tokens.
    pub fn try_reserve(self: &Arc<Self>, tokens: usize) -> Result<Ticket, QueueFull> {
        if self.requests.fetch_add(1, Ordering::SeqCst) >= self.max_requests {
            self.requests.fetch_sub(1, Ordering::SeqCst);
            return Err(QueueFull(format!("{} requests waiting", self.max_requests)));
        }
        // From here on the ticket owns the request place: dropping it on the error path below
        // gives back both counts.
        self.tokens.fetch_add(tokens, Ordering::SeqCst);
        let ticket = Ticket {
            queue: self.clone(),
            tokens,
        };
        if self.tokens.load(Ordering::SeqCst) > self.max_tokens {
            return Err(QueueFull(format!(
                "more than {} prompt tokens waiting",
                self.max_tokens
            )));
        }
        Ok(ticket)
    }

    /// Requests waiting.
    pub fn depth(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Prompt tokens waiting.
    pub fn tokens(&self) -> usize {
        self.tokens.load(Ordering::Relaxed)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.queue.tokens.fetch_sub(self.tokens, Ordering::SeqCst);
        self.queue.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_given_back_once_when_its_ticket_goes() {
        let q = Admission::new(2, 10);
        let a = q.try_reserve(4).expect("room");
        let b = q.try_reserve(4).expect("room");
        assert!(q.try_reserve(1).is_err(), "two requests at most");
        assert_eq!((q.depth(), q.tokens()), (2, 8));
        drop(a);
        assert_eq!((q.depth(), q.tokens()), (1, 4));
        let e = q.try_reserve(7).expect_err("4 + 7 tokens > 10");
        assert!(e.0.contains("10 prompt tokens"), "{e}");
        assert_eq!(
            (q.depth(), q.tokens()),
            (1, 4),
            "a refused reservation leaves nothing"
        );
        drop(b);
        assert_eq!((q.depth(), q.tokens()), (0, 0));
    }
}
