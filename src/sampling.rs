//! Token sampling: turns one sequence's raw logits into the next token id, with the OpenAI and
//! llama.cpp knobs (temperature, top-k, top-p, min-p, penalties, logit bias, seed, logprobs).
//!
//! Pure CPU logic, run on the model worker thread once per generated token per sequence. It must
//! never block, allocate vocab-sized buffers per step (scratch buffers live in [`Sampler`]), or
//! sort the vocabulary: top-k and top logprobs use a bounded heap or quickselect, top-p a
//! histogram and bisection, and only the last few candidates get sorted.
//!
//! Order of processing in [`Sampler::sample`]:
//! 1. `logit_bias` is added to the raw logits.
//! 2. Repetition penalty over every token seen in the prompt or generated:
//!    `logit > 0 ? logit / p : logit * p`.
//! 3. Presence and frequency penalties over generated tokens only:
//!    `logit -= presence * (count > 0) + frequency * count`.
//! 4. NaN logits become `-inf`. Temperature 0 is greedy: the argmax of these processed logits
//!    (ties to the lowest id), and the steps below are skipped.
//! 5. Temperature: `p_i ∝ exp((logit_i - max) / T)`.
//! 6. top-k keeps the `k` highest logits (ties to the lowest id).
//! 7. top-p keeps the smallest set of most likely tokens whose renormalised probability reaches
//!    `top_p` (always at least one token).
//! 8. min-p keeps tokens with `p >= min_p * p_max`.
//! 9. One token is drawn from what is left, renormalised.
//!
//! Logprobs are always those of the raw logits (the model's own distribution, as llama.cpp and
//! vLLM report them), not of the processed distribution the token was drawn from.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The most alternatives `logprobs` may ask for (the OpenAI limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// How many buckets [`weight_bucket`] spreads weights in [0, 1] over.
const WEIGHT_BUCKETS: usize = (1.0f32.to_bits() >> 20) as usize + 1;
/// The top-p bisection sorts what is left once the boundary is within this many tokens.
const NUCLEUS_SORT_BELOW: usize = 64;
/// top-k and top logprobs use a bounded heap when `n * TOP_N_HEAP_RATIO < vocab`, else
/// quickselect.
const TOP_N_HEAP_RATIO: usize = 16;

/// Per-request sampling settings, as validated from the OpenAI request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 is greedy (argmax); otherwise in (0, 2].
    pub temperature: f32,
    /// 0 is off.
    pub top_k: usize,
    /// 1.0 is off; in (0, 1].
    pub top_p: f32,
    /// 0.0 is off; in [0, 1].
    pub min_p: f32,
    /// 1.0 is off; > 0. Applies to tokens seen in the prompt or generated.
    pub repetition_penalty: f32,
    /// 0 is off; in [-2, 2]. Applies to generated tokens only.
    pub presence_penalty: f32,
    /// 0 is off; in [-2, 2]. Applies to generated tokens only.
    pub frequency_penalty: f32,
    /// `(token id, bias)` added to the logits; bias in [-100, 100].
    pub logit_bias: Vec<(u32, f32)>,
    /// Same seed and same logits give the same tokens; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// `Some(n)`: report the chosen token's logprob and the top `n` (at most 20) alternatives.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Argmax decoding, everything else off.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every field's range, and that `logit_bias` names tokens below `vocab_size`.
    pub fn validate(&self, vocab_size: usize) -> Result<(), SamplingError> {
        check_range("temperature", self.temperature, 0.0, 2.0, "[0, 2]")?;
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid(
                "top_p",
                format!("must be in (0, 1], got {}", self.top_p),
            ));
        }
        check_range("min_p", self.min_p, 0.0, 1.0, "[0, 1]")?;
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            let got = self.repetition_penalty;
            return Err(invalid(
                "repetition_penalty",
                format!("must be finite and > 0, got {got}"),
            ));
        }
        check_range(
            "presence_penalty",
            self.presence_penalty,
            -2.0,
            2.0,
            "[-2, 2]",
        )?;
        check_range(
            "frequency_penalty",
            self.frequency_penalty,
            -2.0,
            2.0,
            "[-2, 2]",
        )?;
        for &(id, bias) in &self.logit_bias {
            if id as usize >= vocab_size {
                let msg = format!("token id {id} must be < vocabulary size {vocab_size}");
                return Err(invalid("logit_bias", msg));
            }
            if !(-100.0..=100.0).contains(&bias) {
                let msg = format!("value for token {id} must be in [-100, 100], got {bias}");
                return Err(invalid("logit_bias", msg));
            }
        }
        if let Some(n) = self.logprobs {
            if n > MAX_TOP_LOGPROBS {
                let msg = format!("must be <= {MAX_TOP_LOGPROBS}, got {n}");
                return Err(invalid("logprobs", msg));
            }
        }
        Ok(())
    }
}

fn check_range(
    field: &'static str,
    value: f32,
    lo: f32,
    hi: f32,
    shown: &str,
) -> Result<(), SamplingError> {
    // Written so that NaN fails too.
    if value >= lo && value <= hi {
        Ok(())
    } else {
        Err(invalid(field, format!("must be in {shown}, got {value}")))
    }
}

fn invalid(field: &'static str, rest: String) -> SamplingError {
    SamplingError::InvalidParam {
        field,
        message: format!("{field} {rest}"),
    }
}

/// Why a token could not be sampled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// A parameter is out of range; `message` names the field, the limit and the value.
    #[error("{message}")]
    InvalidParam {
        field: &'static str,
        message: String,
    },
    /// The logits' length differs from the vocabulary size this sampler first saw.
    #[error("logits have {found} entries, expected the vocabulary size {expected}")]
    BadLogits { expected: usize, found: usize },
    /// The logits slice is empty.
    #[error("logits are empty")]
    EmptyLogits,
    /// Every logit is NaN or -inf once bias and penalties are applied: nothing can be sampled.
    #[error("every logit is NaN or -inf after bias and penalties")]
    NonFinite,
}

/// One alternative in a logprobs report.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
}

/// One token with its logprobs: what the sampler picks, what prompt scoring reports, and what
/// the engine streams, unchanged from the sampler to the response encoders.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub id: u32,
    /// Present iff `params.logprobs` is `Some`: the log-softmax of the RAW logits (before
    /// penalties, bias, temperature or truncation: the model's own distribution, as llama.cpp
    /// and vLLM report), at the chosen token.
    pub logprob: Option<f32>,
    /// The top-n tokens by raw logprob, best first (ties broken by lower id),
    /// n = `params.logprobs` (capped at the vocabulary size).
    pub top: Vec<TokenLogprob>,
}

/// Samples one sequence's tokens, step after step, keeping the history penalties need.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// Every token seen in the prompt or generated, mapped to how many times it was generated
    /// (prompt tokens count 0). Its keys are the repetition penalty's set; its counts feed the
    /// presence and frequency penalties.
    history: HashMap<u32, u32>,
    /// Set by the first successful check of the logits' length: the vocabulary size, for which
    /// `params` have been validated.
    vocab: Option<usize>,
    /// Processed logits, then (with no truncation) sampling weights; vocab-sized, reused.
    work: Vec<f32>,
    /// Tokens that survive truncation so far; up to vocab-sized, reused.
    candidates: Vec<Ranked>,
    /// Bounded heap for top-k and top logprobs, reused.
    heap: BinaryHeap<Ranked>,
}

impl fmt::Debug for Sampler {
    // Hand-written so that the vocab-sized scratch buffers stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("params", &self.params)
            .field("history_len", &self.history.len())
            .field("vocab", &self.vocab)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// A sampler for one sequence whose prompt is `prompt` (which feeds the repetition
    /// penalty). `params` are validated against the vocabulary at the first [`Self::sample`].
    /// Without a seed the generator is seeded from the OS, which panics only if the OS has no
    /// entropy source at all.
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = match params.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        let mut history = HashMap::new();
        for &id in prompt {
            history.entry(id).or_insert(0);
        }
        Self {
            params,
            rng,
            history,
            vocab: None,
            work: Vec::new(),
            candidates: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records a token chosen elsewhere (e.g. forced by a constraint), so that penalties see it.
    /// [`Self::sample`] records its own choices.
    pub fn accept(&mut self, id: u32) {
        *self.history.entry(id).or_insert(0) += 1;
    }

    /// Samples the next token from `logits` (shape `[vocab]`, raw model output) and records it.
    pub fn sample(&mut self, logits: &[f32]) -> Result<Token, SamplingError> {
        self.check_vocab(logits.len())?;
        let max = self.process(logits);
        if max == f32::NEG_INFINITY {
            return Err(SamplingError::NonFinite);
        }
        // top-k = 1 is argmax with the same tie rule; skip the weights.
        let id = if self.params.temperature == 0.0 || self.params.top_k == 1 {
            argmax(&self.work)
        } else {
            self.draw(max)
        };
        let (logprob, top_logprobs) = match self.params.logprobs {
            None => (None, Vec::new()),
            Some(n) => {
                let norm = LogNormaliser::new(logits);
                let top = top_logprobs(logits, &norm, n, &mut self.heap, &mut self.candidates);
                (Some(norm.logprob(logits[id as usize])), top)
            }
        };
        self.accept(id);
        Ok(Token {
            id,
            logprob,
            top: top_logprobs,
        })
    }

    fn check_vocab(&mut self, len: usize) -> Result<(), SamplingError> {
        match self.vocab {
            Some(expected) if expected != len => Err(SamplingError::BadLogits {
                expected,
                found: len,
            }),
            Some(_) => Ok(()),
            None if len == 0 => Err(SamplingError::EmptyLogits),
            None => {
                self.params.validate(len)?;
                self.vocab = Some(len);
                Ok(())
            }
        }
    }

    /// Steps 1-4: fills `work` with the processed logits (NaN made -inf) and returns their
    /// maximum (-inf when no token is left).
    fn process(&mut self, logits: &[f32]) -> f32 {
        let p = &self.params;
        let work = &mut self.work;
        work.clear();
        work.extend_from_slice(logits);
        for &(id, bias) in &p.logit_bias {
            // In range: `check_vocab` validated the params against this length.
            work[id as usize] += bias;
        }
        let rep = p.repetition_penalty;
        let (presence, frequency) = (p.presence_penalty, p.frequency_penalty);
        let penalise = rep != 1.0 || presence != 0.0 || frequency != 0.0;
        if penalise {
            // The map's order does not matter (seeded runs stay reproducible): each entry
            // touches only its own logit.
            for (&id, &count) in &self.history {
                // Prompt or accepted ids may lie outside the vocabulary; they cannot be sampled.
                let Some(x) = work.get_mut(id as usize) else {
                    continue;
                };
                if rep != 1.0 {
                    *x = if *x > 0.0 { *x / rep } else { *x * rep };
                }
                if count > 0 {
                    *x -= presence + frequency * count as f32;
                }
            }
        }
        // Written with plain comparisons rather than `f32::max`: twice as fast at 128k.
        let mut max = f32::NEG_INFINITY;
        for x in work.iter_mut() {
            let v = if x.is_nan() { f32::NEG_INFINITY } else { *x };
            *x = v;
            max = if v > max { v } else { max };
        }
        max
    }

    /// Steps 5-9 on the processed logits in `work`, whose maximum is `max` (not -inf).
    fn draw(&mut self, mut max: f32) -> u32 {
        let p = &self.params;
        let work = &mut self.work;
        if max == f32::INFINITY {
            // The limit of softmax as logits grow: the mass splits evenly between the +inf ones.
            for x in work.iter_mut().filter(|x| **x == f32::INFINITY) {
                *x = f32::MAX;
            }
            max = f32::MAX;
        }
        let temperature = p.temperature;
        // Subtracting the max before dividing keeps a tiny temperature from overflowing; the
        // max token gets weight exactly 1, which later steps rely on.
        let weight = |x: f32| ((x - max) / temperature).exp();
        if p.top_k == 0 && p.top_p >= 1.0 && p.min_p <= 0.0 {
            for x in work.iter_mut() {
                *x = weight(*x);
            }
            let items = work.iter().enumerate().map(|(i, &w)| (i as u32, w));
            return draw_weighted(items, &mut self.rng);
        }
        let candidates = &mut self.candidates;
        candidates.clear();
        let mut total = 0.0;
        if p.top_k > 0 {
            let finite = ranked(work).filter(|r| r.score > f32::NEG_INFINITY);
            top_n(finite, p.top_k, work.len(), &mut self.heap, candidates);
            for c in candidates.iter_mut() {
                c.score = weight(c.score);
                total += f64::from(c.score);
            }
        } else {
            // Only tokens min-p keeps become candidates, but all of them count for top-p.
            for (i, &x) in work.iter().enumerate() {
                let w = weight(x);
                total += f64::from(w);
                if w > 0.0 && w >= p.min_p {
                    candidates.push(Ranked {
                        score: w,
                        id: i as u32,
                    });
                }
            }
        }
        if p.min_p > 0.0 {
            candidates.retain(|c| c.score >= p.min_p);
        }
        if p.top_p < 1.0 {
            truncate_top_p(candidates, f64::from(p.top_p) * total);
        }
        let items = candidates.iter().map(|c| (c.id, c.score));
        draw_weighted(items, &mut self.rng)
    }
}

/// A token with a score (a logit or a weight), ordered best first: higher score, then lower id.
/// Scores are never NaN.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    score: f32,
    id: u32,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        // Not `total_cmp`: -0.0 and 0.0 tie, as they do for `argmax`.
        other
            .score
            .partial_cmp(&self.score)
            .unwrap_or(Ordering::Equal)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

fn ranked(scores: &[f32]) -> impl Iterator<Item = Ranked> + '_ {
    scores.iter().enumerate().map(|(i, &score)| Ranked {
        score,
        id: i as u32,
    })
}

/// Puts into `out` (unordered) the best `n` of `items`, of which there are at most `len`.
fn top_n(
    items: impl Iterator<Item = Ranked>,
    n: usize,
    len: usize,
    heap: &mut BinaryHeap<Ranked>,
    out: &mut Vec<Ranked>,
) {
    out.clear();
    if n == 0 {
        return;
    }
    if n.saturating_mul(TOP_N_HEAP_RATIO) >= len {
        // A large share of the vocabulary: quickselect beats a heap.
        out.extend(items);
        if n < out.len() {
            out.select_nth_unstable(n - 1);
            out.truncate(n);
        }
        return;
    }
    // One comparison rejects most items; the heap's top is the worst one kept.
    heap.clear();
    for item in items {
        if heap.len() < n {
            heap.push(item);
        } else if let Some(mut worst) = heap.peek_mut() {
            if item < *worst {
                *worst = item;
            }
        }
    }
    out.extend(heap.drain());
}

/// Keeps in `candidates` (weights in [0, 1]) the smallest set of heaviest tokens, ties to the
/// lower id, whose weight reaches `target`; keeps them all if their whole weight falls short
/// (min-p has already cut inside the nucleus).
///
/// Never sorts the whole set: a histogram of weight buckets finds the bucket holding the
/// boundary, a quickselect bisection narrows it within that bucket, and only the last few
/// tokens are sorted. Linear in the candidates even for flat distributions.
fn truncate_top_p(candidates: &mut Vec<Ranked>, target: f64) {
    let mut bucket_mass = [0.0f64; WEIGHT_BUCKETS];
    for c in candidates.iter() {
        bucket_mass[weight_bucket(c.score)] += f64::from(c.score);
    }
    let mut above = 0.0;
    let Some(edge) = (0..WEIGHT_BUCKETS).rev().find(|&b| {
        let reached = above + bucket_mass[b] >= target;
        if !reached {
            above += bucket_mass[b];
        }
        reached
    }) else {
        return;
    };
    let split = partition(candidates, |r| weight_bucket(r.score) > edge);
    let in_edge = partition(&mut candidates[split..], |r| weight_bucket(r.score) == edge);
    // The boundary lies in [lo, hi); everything before lo is in, holding `target - need`.
    let (mut lo, mut hi, mut need) = (split, split + in_edge, target - above);
    while hi - lo > NUCLEUS_SORT_BELOW {
        let mid = lo + (hi - lo) / 2;
        candidates[lo..hi].select_nth_unstable(mid - lo);
        let upper: f64 = candidates[lo..mid].iter().map(|r| f64::from(r.score)).sum();
        if upper >= need {
            hi = mid;
        } else {
            need -= upper;
            lo = mid;
        }
    }
    candidates[lo..hi].sort_unstable();
    let mut cumulative = 0.0;
    let reached = candidates[lo..hi].iter().position(|r| {
        cumulative += f64::from(r.score);
        cumulative >= need
    });
    // If rounding keeps the sum just short of `need`, the whole range stays.
    candidates.truncate(reached.map_or(hi, |i| lo + i + 1));
}

/// The bucket of a weight in [0, 1]: its top 12 bits (exponent and 3 mantissa bits), which
/// order buckets an eighth of an octave wide like the weights.
fn weight_bucket(w: f32) -> usize {
    if w > 0.0 {
        ((w.to_bits() >> 20) as usize).min(WEIGHT_BUCKETS - 1)
    } else {
        0
    }
}

/// Moves the items satisfying `keep` to the front and returns how many there are.
fn partition(items: &mut [Ranked], keep: impl Fn(&Ranked) -> bool) -> usize {
    let mut front = 0;
    for i in 0..items.len() {
        if keep(&items[i]) {
            items.swap(front, i);
            front += 1;
        }
    }
    front
}

/// Draws an id with probability proportional to its weight. The items must include one of
/// positive weight.
fn draw_weighted(items: impl Iterator<Item = (u32, f32)> + Clone, rng: &mut ChaCha8Rng) -> u32 {
    let total: f64 = items.clone().map(|(_, w)| f64::from(w)).sum();
    let target = rng.random::<f64>() * total;
    let mut cumulative = 0.0;
    let mut last_positive = None;
    for (id, w) in items {
        if w > 0.0 {
            cumulative += f64::from(w);
            if cumulative > target {
                return id;
            }
            last_positive = Some(id);
        }
    }
    // Only reached when rounding leaves `cumulative` a hair below `target`.
    last_positive.expect("invariant: the max-logit candidate has weight 1")
}

/// Softmax's normaliser over raw logits, shared by [`log_softmax`] and the sampler's logprobs
/// so that both give identical values. NaN counts as -inf; +inf logits split the mass evenly
/// (softmax's limit as they grow).
struct LogNormaliser {
    /// The largest non-NaN logit.
    max: f32,
    /// `ln Σ exp(x - max)`; when `max` is +inf, the log of how many logits are +inf.
    log_sum: f64,
}

impl LogNormaliser {
    fn new(logits: &[f32]) -> Self {
        let key = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| {
            let x = key(x);
            if x > m {
                x
            } else {
                m
            }
        });
        let sum: f64 = if max == f32::INFINITY {
            logits.iter().filter(|&&x| x == f32::INFINITY).count() as f64
        } else {
            // f32 exponentials, f64 sum: fast, and accurate to ~1e-7 over 100k+ terms.
            logits
                .iter()
                .map(|&x| f64::from((key(x) - max).exp()))
                .sum()
        };
        Self {
            max,
            log_sum: sum.ln(),
        }
    }

    fn logprob(&self, logit: f32) -> f32 {
        if logit.is_nan() || self.max == f32::NEG_INFINITY {
            f32::NEG_INFINITY
        } else if self.max == f32::INFINITY {
            if logit == f32::INFINITY {
                -self.log_sum as f32
            } else {
                f32::NEG_INFINITY
            }
        } else {
            (f64::from(logit) - f64::from(self.max) - self.log_sum) as f32
        }
    }
}

/// Orders raw logits for the logprobs report: NaN last.
fn finite_key(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// The `n` best tokens by raw logit, best first, ties to the lower id.
fn top_logprobs(
    logits: &[f32],
    norm: &LogNormaliser,
    n: usize,
    heap: &mut BinaryHeap<Ranked>,
    scratch: &mut Vec<Ranked>,
) -> Vec<TokenLogprob> {
    let items = logits.iter().enumerate().map(|(i, &x)| Ranked {
        score: finite_key(x),
        id: i as u32,
    });
    top_n(items, n, logits.len(), heap, scratch);
    scratch.sort_unstable();
    scratch
        .iter()
        .map(|r| TokenLogprob {
            id: r.id,
            logprob: norm.logprob(logits[r.id as usize]),
        })
        .collect()
}

/// Log-softmax over `logits` (f64 accumulation for the normaliser); used for logprobs and by
/// the perplexity tool. NaN is treated as -inf; +inf logits share the mass evenly; if every
/// logit is NaN or -inf, every output is -inf.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let norm = LogNormaliser::new(logits);
    logits.iter().map(|&x| norm.logprob(x)).collect()
}

/// The logprob of `id` under the raw `logits` and the `n` best alternatives, as the sampler
/// reports them for a generated token; used to score prompt tokens.
pub fn score(logits: &[f32], id: u32, n: usize) -> (f32, Vec<TokenLogprob>) {
    let norm = LogNormaliser::new(logits);
    let top = top_logprobs(logits, &norm, n, &mut BinaryHeap::new(), &mut Vec::new());
    let logit = logits.get(id as usize).copied().unwrap_or(f32::NAN);
    (norm.logprob(logit), top)
}

/// Index of the largest logit; ties go to the lowest id and NaN never wins (0 for an empty or
/// all-NaN slice).
pub fn argmax(logits: &[f32]) -> u32 {
    // A branch-light scan; `Option` bookkeeping made it about 3x slower at 128k.
    let (mut best, mut best_value) = (usize::MAX, f32::NEG_INFINITY);
    for (i, &x) in logits.iter().enumerate() {
        // Strictly greater keeps the lowest id on ties; NaN compares false and never wins,
        // but the first non-NaN logit wins even when it is -inf.
        if x > best_value || (best == usize::MAX && !x.is_nan()) {
            best = i;
            best_value = x;
        }
    }
    if best == usize::MAX {
        0
    } else {
        best as u32
    }
}

#[cfg(test)]
mod tests;
