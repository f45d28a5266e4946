//! Per-key limits: requests per minute, tokens per minute and concurrent requests, each key with
//! its own quotas (from the keys file), and the per-key request and token counters. Runs on the
//! HTTP tasks; nothing here waits.
//!
//! - [`Limiters`]: one [`KeyLimiter`] per configured key, built once at start.
//! - [`enforce`], the router's middleware after `auth`: a request of a key past its concurrency
//!   or requests-per-minute limit gets 429 before its body is read; otherwise its [`Budget`]
//!   goes into the request's extensions, and every response of that key carries OpenAI's
//!   `x-ratelimit-*` headers.
//! - The generating handlers call [`Budget::reserve`] once they know the request's size: the
//!   prompt plus `n × max_tokens` are taken from the key's token bucket at admission (429 when
//!   they do not fit now), and settled to the tokens really counted (prompt + completion, from
//!   the request's [`AccessNote`]) when the response body is done. The request's concurrency
//!   slot is given back then too.
//!
//! Both rates are a [`TokenBucket`] of our own rather than `governor`'s GCRA: a token
//! reservation must be given back when the request uses less than it reserved, and every
//! response reports what is left, and a GCRA limiter can neither give back nor be read without
//! taking.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::access::{on_body_done, AccessNote};
use super::auth::{ApiKeyName, ApiKeys};
use super::error::ApiError;
use super::metrics::Metrics;
use super::AppState;

/// One key's quotas; `None`: no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    pub requests_per_minute: Option<NonZeroU32>,
    pub tokens_per_minute: Option<NonZeroU32>,
    pub max_concurrent_requests: Option<NonZeroU32>,
    /// The "minute": 60 s; shorter only in tests, so that a bucket refills while they wait.
    pub window: Duration,
}

impl Default for KeyLimits {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            max_concurrent_requests: None,
            window: Duration::from_secs(60),
        }
    }
}

impl KeyLimits {
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.max_concurrent_requests.is_none()
    }
}

/// One figure of the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing {
    limit: u64,
    remaining: u64,
    /// Until the bucket is full again.
    reset: Duration,
}

/// A token bucket that can give back: `capacity` tokens, refilled at `capacity` per `window`.
/// Its level may go below zero when a request used more than it reserved (the debt is repaid
/// by the refill).
#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(capacity: NonZeroU32, window: Duration, now: Instant) -> Self {
        let capacity = f64::from(capacity.get());
        Self {
            capacity,
            per_sec: capacity / window.as_secs_f64().max(1e-3),
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_sec).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// Takes `n` tokens, or says how long until they are there (`None`: never, `n` is over
    /// the capacity).
    fn try_take(&mut self, n: u64, now: Instant) -> Result<(), Option<Duration>> {
        self.refill(now);
        let n = n as f64;
        if n > self.capacity {
            return Err(None);
        }
        if n <= self.level {
            self.level -= n;
            return Ok(());
        }
        Err(Some(Duration::from_secs_f64(
            (n - self.level) / self.per_sec,
        )))
    }

    /// Gives back `n` tokens (takes them when negative).
    fn give(&mut self, n: i64, now: Instant) {
        self.refill(now);
        self.level = (self.level + n as f64).min(self.capacity);
    }

    fn standing(&mut self, now: Instant) -> Standing {
        self.refill(now);
        Standing {
            limit: self.capacity as u64,
            remaining: self.level.max(0.0).floor() as u64,
            reset: Duration::from_secs_f64((self.capacity - self.level) / self.per_sec),
        }
    }
}

/// Why a request of a key was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Refusal {
    /// The key already runs this many requests.
    Concurrency(u32),
    /// Requests per minute: `limit`, the next one allowed after `wait`.
    Requests { limit: u32, wait: Duration },
    /// Tokens per minute: `asked` tokens do not fit `limit` now; `wait: None`, never.
    Tokens {
        limit: u32,
        asked: u64,
        wait: Option<Duration>,
    },
}

impl Refusal {
    /// The `limit` label of `wick_rate_limited_total`.
    fn kind(&self) -> &'static str {
        match self {
            Refusal::Concurrency(_) => "concurrency",
            Refusal::Requests { .. } => "requests",
            Refusal::Tokens { .. } => "tokens",
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Concurrency(max) => ApiError::RateLimited {
                message: format!(
                    "Rate limit reached on concurrent requests: limit {max}; \
                     wait for one to finish"
                ),
                kind: "requests",
                retry_after: Some(Duration::from_secs(1)),
            },
            Refusal::Requests { limit, wait } => ApiError::RateLimited {
                message: format!(
                    "Rate limit reached on requests per minute (RPM): limit {limit}. \
                     Please try again in {}.",
                    go_duration(wait)
                ),
                kind: "requests",
                retry_after: Some(wait),
            },
            Refusal::Tokens {
                limit,
                asked,
                wait: Some(wait),
            } => ApiError::RateLimited {
                message: format!(
                    "Rate limit reached on tokens per minute (TPM): limit {limit}, requested \
                     {asked}. Please try again in {}.",
                    go_duration(wait)
                ),
                kind: "tokens",
                retry_after: Some(wait),
            },
            Refusal::Tokens {
                limit,
                asked,
                wait: None,
            } => ApiError::RateLimited {
                message: format!(
                    "Request too large for tokens per minute (TPM): limit {limit}, requested \
                     {asked} (the prompt plus n × max_tokens). Lower max_tokens or send less."
                ),
                kind: "tokens",
                retry_after: None,
            },
        }
    }
}

/// One key's live state: its buckets and how many of its requests run.
#[derive(Debug)]
pub struct KeyLimiter {
    limits: KeyLimits,
    requests: Option<Mutex<TokenBucket>>,
    tokens: Option<Mutex<TokenBucket>>,
    running: AtomicU32,
}

fn lock(m: &Mutex<TokenBucket>) -> std::sync::MutexGuard<'_, TokenBucket> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyLimiter {
    pub fn new(limits: KeyLimits) -> Self {
        let now = Instant::now();
        let bucket =
            |n: Option<NonZeroU32>| n.map(|n| Mutex::new(TokenBucket::new(n, limits.window, now)));
        Self {
            requests: bucket(limits.requests_per_minute),
            tokens: bucket(limits.tokens_per_minute),
            limits,
            running: AtomicU32::new(0),
        }
    }

    /// A concurrency slot, then one request from the bucket; or why not.
    fn admit(&self, now: Instant) -> Result<(), Refusal> {
        if let Some(max) = self.limits.max_concurrent_requests {
            self.running
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                    (r < max.get()).then_some(r + 1)
                })
                .map_err(|_| Refusal::Concurrency(max.get()))?;
        }
        if let (Some(bucket), Some(limit)) = (&self.requests, self.limits.requests_per_minute) {
            if let Err(wait) = lock(bucket).try_take(1, now) {
                self.release();
                return Err(Refusal::Requests {
                    limit: limit.get(),
                    wait: wait.unwrap_or(self.limits.window),
                });
            }
        }
        Ok(())
    }

    fn release(&self) {
        if self.limits.max_concurrent_requests.is_some() {
            let _ = self
                .running
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1));
        }
    }

    /// Takes `n` tokens for a request (a no-op without a tokens limit).
    fn take_tokens(&self, n: u64, now: Instant) -> Result<(), Refusal> {
        let (Some(bucket), Some(limit)) = (&self.tokens, self.limits.tokens_per_minute) else {
            return Ok(());
        };
        lock(bucket)
            .try_take(n, now)
            .map_err(|wait| Refusal::Tokens {
                limit: limit.get(),
                asked: n,
                wait,
            })
    }

    /// Settles a reservation: `reserved` were taken, `used` were counted.
    fn settle(&self, reserved: u64, used: u64, now: Instant) {
        if let Some(bucket) = &self.tokens {
            lock(bucket).give(reserved as i64 - used as i64, now);
        }
    }

    /// The `x-ratelimit-*` headers of this key's responses (none for an unlimited kind).
    fn headers(&self, now: Instant) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (kind, bucket) in [("requests", &self.requests), ("tokens", &self.tokens)] {
            let Some(s) = bucket.as_ref().map(|b| lock(b).standing(now)) else {
                continue;
            };
            for (field, value) in [
                ("limit", s.limit.to_string()),
                ("remaining", s.remaining.to_string()),
                ("reset", go_duration(s.reset)),
            ] {
                let name = format!("x-ratelimit-{field}-{kind}");
                if let (Ok(n), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    h.insert(n, v);
                }
            }
        }
        h
    }
}

/// Every configured key's limiter, by key name. Empty when no key has limits.
#[derive(Debug, Default)]
pub struct Limiters {
    by_name: HashMap<Arc<str>, Arc<KeyLimiter>>,
}

impl Limiters {
    /// A limiter for each key of `keys` that has a limit.
    pub fn new(keys: &ApiKeys) -> Self {
        Self {
            by_name: keys
                .limits()
                .filter(|(_, l)| !l.is_unlimited())
                .map(|(name, l)| (name, Arc::new(KeyLimiter::new(l))))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&Arc<KeyLimiter>> {
        self.by_name.get(name)
    }
}

/// A request's share of its key's token budget, in its extensions: the handler reserves with
/// [`Budget::reserve`] once it knows the request's size.
#[derive(Debug, Clone)]
pub struct Budget(Arc<Reservation>);

#[derive(Debug)]
struct Reservation {
    limiter: Arc<KeyLimiter>,
    reserved: AtomicU64,
    /// The handler's reservation was refused (counted by the middleware).
    refused: AtomicBool,
}

impl Budget {
    /// Takes `tokens` (the prompt plus `n × max_tokens`) from the key's tokens-per-minute
    /// bucket, or 429 when they do not fit now. Settled when the response body is done.
    pub fn reserve(&self, tokens: usize) -> Result<(), ApiError> {
        let n = tokens as u64;
        if let Err(r) = self.0.limiter.take_tokens(n, Instant::now()) {
            self.0.refused.store(true, Ordering::SeqCst);
            return Err(r.into());
        }
        self.0.reserved.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }
}

/// Reserves `tokens` against the request's budget, if its key has one.
pub fn reserve(budget: Option<&Budget>, tokens: usize) -> Result<(), ApiError> {
    budget.map_or(Ok(()), |b| b.reserve(tokens))
}

/// Held by a response body until it is done: gives back the concurrency slot, settles the
/// reservation and counts the key's request and tokens.
struct Done {
    key: Arc<str>,
    reservation: Option<Arc<Reservation>>,
    note: Option<AccessNote>,
    metrics: Arc<Metrics>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let r = self.note.as_ref().map(AccessNote::get).unwrap_or_default();
        let used = (r.prompt_tokens + r.completion_tokens) as u64;
        self.metrics
            .key_request(&self.key, r.prompt_tokens, r.completion_tokens);
        if let Some(res) = &self.reservation {
            let reserved = res.reserved.load(Ordering::SeqCst);
            res.limiter.settle(reserved, used, Instant::now());
            res.limiter.release();
        }
    }
}

/// Admits one request of `key` against its limiter, if it has one: a concurrency slot and
/// one request from its requests-per-minute bucket; or the 429 with the key's `x-ratelimit-*`
/// headers, the refusal counted.
fn admit(
    state: &AppState,
    key: &Arc<str>,
) -> Result<Option<Arc<Reservation>>, Box<(ApiError, HeaderMap)>> {
    let Some(limiter) = state.limiters().get(key).cloned() else {
        return Ok(None);
    };
    if let Err(refusal) = limiter.admit(Instant::now()) {
        state.metrics().rate_limited(key, refusal.kind());
        return Err(Box::new((refusal.into(), limiter.headers(Instant::now()))));
    }
    Ok(Some(Arc::new(Reservation {
        limiter,
        reserved: AtomicU64::new(0),
        refused: AtomicBool::new(false),
    })))
}

/// The middleware (inside `auth`, which names the key): admits the request against its key's
/// concurrency and requests-per-minute limits (429 otherwise, before the body is read), hands
/// the handler its [`Budget`], and puts the key's `x-ratelimit-*` headers on the response.
/// Requests without a key (an open server, public paths) pass untouched.
pub async fn enforce(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(key) = req.extensions().get::<ApiKeyName>().map(|k| k.name.clone()) else {
        return next.run(req).await;
    };
    let reservation = match admit(&state, &key) {
        Ok(r) => r,
        Err(refused) => {
            let (e, headers) = *refused;
            let mut resp = e.into_response();
            resp.headers_mut().extend(headers);
            return resp;
        }
    };
    if let Some(r) = &reservation {
        req.extensions_mut().insert(Budget(r.clone()));
    }
    let note = req.extensions().get::<AccessNote>().cloned();
    let mut resp = next.run(req).await;
    if let Some(r) = &reservation {
        if r.refused.load(Ordering::SeqCst) {
            state.metrics().rate_limited(&key, "tokens");
        }
        resp.headers_mut().extend(r.limiter.headers(Instant::now()));
    }
    let done = Done {
        key,
        reservation,
        note,
        metrics: state.metrics().clone(),
    };
    on_body_done(resp, done)
}

/// One WebSocket turn's place in its key's limits, held until the turn's events are done:
/// the concurrency slot and the token reservation an HTTP request's middleware would hold.
pub struct TurnSlot {
    budget: Option<Budget>,
    done: Done,
}

impl Drop for TurnSlot {
    fn drop(&mut self) {
        if let Some(r) = &self.done.reservation {
            if r.refused.load(Ordering::SeqCst) {
                self.done.metrics.rate_limited(&self.done.key, "tokens");
            }
        }
    }
}

impl TurnSlot {
    /// The turn's token budget, to reserve its prompt and output against.
    pub fn budget(&self) -> Option<Budget> {
        self.budget.clone()
    }
}

/// Admits a WebSocket turn of `key` (none: an open server) as [`enforce`] admits a request;
/// `note` is the turn's record, which settles its reservation at the end. A refusal is the
/// 429 error (the turn's `error` event).
pub fn admit_turn(
    state: &AppState,
    key: Option<&Arc<str>>,
    note: AccessNote,
) -> Result<Option<TurnSlot>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let reservation = admit(state, key).map_err(|refused| refused.0)?;
    Ok(Some(TurnSlot {
        budget: reservation.clone().map(Budget),
        done: Done {
            key: key.clone(),
            reservation,
            note: Some(note),
            metrics: state.metrics().clone(),
        },
    }))
}

/// A duration as OpenAI's reset headers write it (Go's format): `250ms`, `1s`, `1.5s`, `6m0s`,
/// `1h2m3s`; rounded up to the millisecond below a minute, to the second above.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let s = format!("{}.{:03}", ms / 1000, ms % 1000);
        return format!("{}s", s.trim_end_matches('0').trim_end_matches('.'));
    }
    let secs = ms.div_ceil(1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(n)
    }

    #[test]
    fn the_bucket_refills_over_its_window_and_gives_back() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(nz(100).unwrap(), Duration::from_secs(60), t0);
        assert_eq!(b.try_take(60, t0), Ok(()));
        // 40 left: 50 more need 10, which the refill (100 per minute) brings in 6 s.
        let wait = b
            .try_take(50, t0)
            .expect_err("not yet")
            .expect("possible later");
        assert!((wait.as_secs_f64() - 6.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(b.try_take(50, t0 + Duration::from_secs(6)), Ok(()));
        // Over the capacity: never.
        assert_eq!(b.try_take(101, t0 + Duration::from_secs(600)), Err(None));
        let t1 = t0 + Duration::from_secs(600);
        let s = b.standing(t1);
        assert_eq!((s.limit, s.remaining, s.reset), (100, 100, Duration::ZERO));
        // Reserve 80, use 30: 50 come back.
        b.try_take(80, t1).expect("fits");
        b.give(80 - 30, t1);
        assert_eq!(b.standing(t1).remaining, 70);
        // Used more than reserved: a debt the refill repays.
        b.give(-100, t1);
        let s = b.standing(t1);
        assert_eq!(s.remaining, 0);
        assert!((s.reset.as_secs_f64() - 78.0).abs() < 1e-6, "{:?}", s.reset);
    }

    #[test]
    fn a_key_is_held_to_each_of_its_limits() {
        let l = KeyLimiter::new(KeyLimits {
            requests_per_minute: nz(2),
            max_concurrent_requests: nz(1),
            tokens_per_minute: nz(1000),
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        assert_eq!(l.admit(t0), Ok(()));
        // One runs: the second waits for it, and takes no request from the bucket.
        assert_eq!(l.admit(t0), Err(Refusal::Concurrency(1)));
        l.release();
        assert_eq!(l.admit(t0), Ok(()));
        l.release();
        match l.admit(t0) {
            Err(Refusal::Requests { limit: 2, wait }) => {
                assert!((wait.as_secs_f64() - 30.0).abs() < 1e-3, "{wait:?}")
            }
            other => panic!("{other:?}"),
        }
        // The refused request gave its concurrency slot back.
        assert_eq!(l.running.load(Ordering::SeqCst), 0);
        assert_eq!(l.take_tokens(900, t0), Ok(()));
        assert!(matches!(
            l.take_tokens(200, t0),
            Err(Refusal::Tokens {
                limit: 1000,
                asked: 200,
                wait: Some(_)
            })
        ));
        l.settle(900, 150, t0);
        assert_eq!(l.take_tokens(800, t0), Ok(()));
        let h = l.headers(t0);
        assert_eq!(h["x-ratelimit-limit-requests"], "2");
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        assert_eq!(h["x-ratelimit-reset-requests"], "1m0s");
        assert_eq!(h["x-ratelimit-limit-tokens"], "1000");
        assert_eq!(h["x-ratelimit-remaining-tokens"], "50");
        assert_eq!(h["x-ratelimit-reset-tokens"], "57s");
    }

    #[test]
    fn unlimited_kinds_send_no_headers() {
        let l = KeyLimiter::new(KeyLimits {
            max_concurrent_requests: nz(3),
            ..KeyLimits::default()
        });
        assert!(l.headers(Instant::now()).is_empty());
        assert_eq!(l.take_tokens(u64::MAX, Instant::now()), Ok(()));
    }

    #[test]
    fn refusals_are_429_with_the_wait_and_openai_codes() {
        let e: ApiError = Refusal::Requests {
            limit: 3,
            wait: Duration::from_millis(20_500),
        }
        .into();
        let r = e.clone().into_response();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "21");
        assert_eq!(r.headers()["retry-after-ms"], "20500");
        let body = e.body();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "requests");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("20.5s"));
        let too_big: ApiError = Refusal::Tokens {
            limit: 10,
            asked: 11,
            wait: None,
        }
        .into();
        let r = too_big.into_response();
        assert_eq!(r.status().as_u16(), 429);
        assert!(r.headers().get("retry-after").is_none());
    }

    #[test]
    fn durations_read_like_openais() {
        for (ms, text) in [
            (0, "0ms"),
            (20, "20ms"),
            (999, "999ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (59_999, "59.999s"),
            (60_000, "1m0s"),
            (360_000, "6m0s"),
            (3_723_000, "1h2m3s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(ms)), text);
        }
        assert_eq!(go_duration(Duration::from_micros(1)), "1ms");
    }
}
