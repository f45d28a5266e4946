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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    /// Default params with `set` applied.
    fn with(set: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut params = SamplingParams::default();
        set(&mut params);
        params
    }

    fn greedy_with(set: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut params = SamplingParams::greedy();
        set(&mut params);
        params
    }

    fn seeded(params: SamplingParams, seed: u64) -> Sampler {
        Sampler::new(
            SamplingParams {
                seed: Some(seed),
                ..params
            },
            &[],
        )
    }

    /// Logits whose softmax is exactly `probs` (up to rounding).
    fn logits_of(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    /// How often each id is drawn in `draws` steps with the same logits.
    fn frequencies(sampler: &mut Sampler, logits: &[f32], draws: usize) -> Vec<usize> {
        let mut counts = vec![0; logits.len()];
        for _ in 0..draws {
            let id = sampler.sample(logits).expect("sample").id;
            counts[id as usize] += 1;
        }
        counts
    }

    fn random_logits(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-scale..scale)).collect()
    }

    #[test]
    fn argmax_picks_the_largest_lowest_id_on_ties_and_never_nan() {
        assert_eq!(argmax(&[0.1, 3.0, -2.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN, 2.0]), 3);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY, -5.0]), 2);
        assert_eq!(argmax(&[-1.0, f32::INFINITY, f32::INFINITY]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn greedy_sampling_is_argmax_and_skips_nan() {
        let mut sampler = Sampler::new(SamplingParams::greedy(), &[]);
        let logits = [f32::NAN, 0.5, 2.0, 2.0, -1.0];
        for _ in 0..5 {
            assert_eq!(sampler.sample(&logits).expect("sample").id, 2);
        }
        let all_nan = [f32::NAN; 5];
        assert_eq!(sampler.sample(&all_nan), Err(SamplingError::NonFinite));
        let mut random = seeded(SamplingParams::default(), 1);
        assert_eq!(random.sample(&all_nan), Err(SamplingError::NonFinite));
        let nan_and_one = [f32::NAN, f32::NAN, -3.0, f32::NEG_INFINITY, f32::NAN];
        assert_eq!(random.sample(&nan_and_one).expect("sample").id, 2);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let steps: Vec<Vec<f32>> = (0..200)
            .map(|_| random_logits(&mut rng, 1000, 1.0))
            .collect();
        let run = |seed: u64| -> Vec<u32> {
            let params = SamplingParams {
                top_p: 0.95,
                top_k: 500,
                ..SamplingParams::default()
            };
            let mut sampler = seeded(params, seed);
            steps
                .iter()
                .map(|l| sampler.sample(l).expect("sample").id)
                .collect()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn low_temperature_approaches_argmax() {
        let logits = [1.0, 1.5, 0.9, 1.2];
        let argmax_share = |temperature: f32| {
            let params = SamplingParams {
                temperature,
                ..SamplingParams::default()
            };
            frequencies(&mut seeded(params, 3), &logits, 2000)[1]
        };
        let (hot, warm, cold) = (argmax_share(1.0), argmax_share(0.1), argmax_share(0.01));
        assert!(hot < 1000, "T=1 spreads the mass: {hot}");
        // The nearest rival is 0.3 below: exp(-3) ≈ 5% of the argmax's weight at T=0.1.
        assert!(warm > 1800, "T=0.1 is nearly greedy: {warm}");
        assert_eq!(cold, 2000, "T=0.01 is greedy in practice");
    }

    #[test]
    fn temperature_one_matches_softmax_frequencies() {
        let logits = [1.0, 2.0, 0.5, -1.0, 0.0];
        let draws = 20_000;
        let counts = frequencies(&mut seeded(SamplingParams::default(), 11), &logits, draws);
        for (id, lp) in log_softmax(&logits).iter().enumerate() {
            let expected = lp.exp();
            let seen = counts[id] as f32 / draws as f32;
            assert!(
                (seen - expected).abs() < 0.01,
                "id {id}: {seen} vs {expected}"
            );
        }
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let params = with(|p| p.top_k = 1);
        let mut top1 = seeded(params, 9);
        let mut greedy = Sampler::new(SamplingParams::greedy(), &[]);
        for _ in 0..100 {
            let logits = random_logits(&mut rng, 300, 3.0);
            let a = top1.sample(&logits).expect("sample").id;
            assert_eq!(a, greedy.sample(&logits).expect("sample").id);
        }
    }

    #[test]
    fn top_k_two_stays_in_the_top_two() {
        let logits = [0.0, 2.0, 1.9, 1.8, 0.5];
        let params = with(|p| p.top_k = 2);
        let counts = frequencies(&mut seeded(params, 1), &logits, 2000);
        assert_eq!(counts[0] + counts[3] + counts[4], 0, "{counts:?}");
        assert!(counts[1] > 0 && counts[2] > 0, "{counts:?}");
    }

    #[test]
    fn top_p_keeps_the_minimal_nucleus() {
        let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
        let with_top_p = |top_p: f32| {
            let params = SamplingParams {
                top_p,
                ..SamplingParams::default()
            };
            frequencies(&mut seeded(params, 2), &logits, 2000)
        };
        let nucleus = with_top_p(0.7);
        assert_eq!(nucleus[2] + nucleus[3], 0, "{nucleus:?}");
        assert!(nucleus[0] > 0 && nucleus[1] > 0, "{nucleus:?}");
        let tiny = with_top_p(0.1);
        assert_eq!(tiny[0], 2000, "always at least the top token: {tiny:?}");
        let wide = with_top_p(0.9);
        assert_eq!(wide[3], 0, "{wide:?}");
        assert!(wide[2] > 0, "{wide:?}");
    }

    #[test]
    fn top_p_nucleus_on_a_large_flat_tail() {
        // Mass spread thinly over 50k tokens exercises the threshold retries.
        let mut logits = vec![0.0; 50_000];
        logits[7] = 12.0;
        let params = with(|p| p.top_p = 0.95);
        let mut sampler = seeded(params, 4);
        let p7 = log_softmax(&logits)[7].exp();
        assert!(p7 < 0.95, "the tail is needed for the nucleus: {p7}");
        let counts = frequencies(&mut sampler, &logits, 200);
        assert!(counts[7] > 0 && counts[7] < 200, "{}", counts[7]);
    }

    /// Ids sorted best first by score, ties to the lower id: the naive reference.
    fn sorted_ids(scores: &[f32]) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..scores.len() as u32).collect();
        ids.sort_by(|&a, &b| {
            scores[b as usize]
                .total_cmp(&scores[a as usize])
                .then(a.cmp(&b))
        });
        ids
    }

    #[test]
    fn top_p_and_top_k_match_a_full_sort_on_large_flat_vocabularies() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for (n, spread) in [(5000, 0.5), (50_000, 3.0), (3000, 0.01)] {
            // Flat weights crowd thousands of tokens into one histogram bucket; rounding to
            // 1/64 adds ties.
            let weights: Vec<f32> = (0..n)
                .map(|_| (rng.random_range(-spread..0.0f32) * 64.0).round() / 64.0)
                .map(f32::exp)
                .collect();
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            for top_p in [0.05f32, 0.5, 0.9, 0.999] {
                let mut candidates: Vec<Ranked> = ranked(&weights).collect();
                truncate_top_p(&mut candidates, f64::from(top_p) * total);
                let mut kept: Vec<u32> = candidates.iter().map(|r| r.id).collect();
                kept.sort_unstable();
                let mut cumulative = 0.0;
                let mut expected: Vec<u32> = sorted_ids(&weights)
                    .into_iter()
                    .take_while(|&id| {
                        let before = cumulative;
                        cumulative += f64::from(weights[id as usize]);
                        before < f64::from(top_p) * total
                    })
                    .collect();
                expected.sort_unstable();
                assert_eq!(kept, expected, "n {n} spread {spread} top_p {top_p}");
            }
            for k in [1, 40, n / 20, n / 2] {
                let mut out = Vec::new();
                top_n(ranked(&weights), k, n, &mut BinaryHeap::new(), &mut out);
                out.sort_unstable();
                let ids: Vec<u32> = out.iter().map(|r| r.id).collect();
                assert_eq!(ids, sorted_ids(&weights)[..k], "n {n} k {k}");
            }
        }
    }

    #[test]
    fn min_p_drops_tokens_below_the_scaled_max() {
        let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
        let with_min_p = |min_p: f32, top_p: f32| {
            let params = SamplingParams {
                min_p,
                top_p,
                ..SamplingParams::default()
            };
            frequencies(&mut seeded(params, 8), &logits, 2000)
        };
        let half = with_min_p(0.5, 1.0); // keeps p >= 0.25
        assert_eq!(half[2] + half[3], 0, "{half:?}");
        assert!(half[1] > 0, "{half:?}");
        let quarter = with_min_p(0.25, 1.0); // keeps p >= 0.125
        assert_eq!(quarter[3], 0, "{quarter:?}");
        assert!(quarter[2] > 0, "{quarter:?}");
        // With top-p the smaller of the two sets wins, whichever it is.
        let both = with_min_p(0.25, 0.6);
        assert_eq!(both[2] + both[3], 0, "{both:?}");
        let both = with_min_p(0.5, 0.95);
        assert_eq!(both[2] + both[3], 0, "{both:?}");
    }

    #[test]
    fn repetition_penalty_lowers_seen_tokens_of_either_sign() {
        let params = greedy_with(|p| p.repetition_penalty = 2.0);
        let mut sampler = Sampler::new(params, &[2]);
        // Positive: 1.5 / 2 = 0.75 < 1.0.
        assert_eq!(sampler.sample(&[1.0, 0.0, 1.5]).expect("sample").id, 0);
        // Negative: -0.6 * 2 = -1.2 < -1.0.
        let mut sampler = Sampler::new(sampler.params().clone(), &[2]);
        assert_eq!(sampler.sample(&[-1.0, -2.0, -0.6]).expect("sample").id, 0);
        // Generated tokens count too: 0 was just generated, so 3.0 / 2 = 1.5 < 1.6.
        assert_eq!(sampler.sample(&[3.0, 1.6, -5.0]).expect("sample").id, 1);
        // Unseen tokens are untouched.
        sampler.process(&[0.5, -0.5, 4.0, -4.0]);
        assert_eq!(sampler.work, [0.25, -1.0, 2.0, -4.0]);
    }

    #[test]
    fn frequency_penalty_grows_with_the_count() {
        let params = greedy_with(|p| p.frequency_penalty = 0.5);
        let mut sampler = Sampler::new(params, &[]);
        let logits = [1.0, 0.0, -3.0];
        let ids: Vec<u32> = (0..4)
            .map(|_| sampler.sample(&logits).expect("s").id)
            .collect();
        // 1.0, 0.5, 0.0 (ties 0.0 with id 1, lowest id wins), then -0.5 < 0.0.
        assert_eq!(ids, [0, 0, 0, 1]);
    }

    #[test]
    fn presence_penalty_is_flat_and_ignores_the_prompt() {
        let params = greedy_with(|p| p.presence_penalty = 0.6);
        let mut sampler = Sampler::new(params, &[0]);
        let logits = [1.0, 0.5];
        let ids: Vec<u32> = (0..4)
            .map(|_| sampler.sample(&logits).expect("s").id)
            .collect();
        // 1.0 (prompt is not penalised), then 0.4 < 0.5, then 0.4 > -0.1 for good.
        assert_eq!(ids, [0, 1, 0, 0]);
    }

    #[test]
    fn accept_feeds_the_penalties() {
        let params = greedy_with(|p| p.presence_penalty = 2.0);
        let mut sampler = Sampler::new(params, &[]);
        sampler.accept(0);
        sampler.accept(70_000); // outside the vocabulary: ignored, no panic
        assert_eq!(sampler.sample(&[1.0, 0.0]).expect("sample").id, 1);
    }

    #[test]
    fn logit_bias_minus_100_bans_and_plus_100_forces() {
        let logits = [5.0, 0.0, 0.0, -2.0];
        let banned = with(|p| p.logit_bias = vec![(0, -100.0)]);
        assert_eq!(frequencies(&mut seeded(banned, 1), &logits, 1000)[0], 0);
        let forced = with(|p| p.logit_bias = vec![(3, 100.0)]);
        assert_eq!(frequencies(&mut seeded(forced, 1), &logits, 1000)[3], 1000);
    }

    #[test]
    fn logprobs_are_the_raw_distribution() {
        let logits = [0.3, 2.0, -1.0, 2.0, 0.7, 1.1];
        let params = SamplingParams {
            temperature: 0.4,
            repetition_penalty: 1.7,
            frequency_penalty: 1.0,
            logit_bias: vec![(4, 3.0)],
            logprobs: Some(3),
            ..SamplingParams::default()
        };
        let raw = log_softmax(&logits);
        let mut sampler = seeded(params, 6);
        for _ in 0..20 {
            let token = sampler.sample(&logits).expect("sample");
            assert_eq!(token.logprob, Some(raw[token.id as usize]));
            let top: Vec<(u32, f32)> = token.top.iter().map(|t| (t.id, t.logprob)).collect();
            // Ties (ids 1 and 3) go to the lower id.
            assert_eq!(top, [(1, raw[1]), (3, raw[3]), (5, raw[5])]);
        }
    }

    #[test]
    fn logprobs_zero_gives_the_chosen_only_and_none_gives_nothing() {
        let logits = [0.0, 1.0, 2.0];
        let params = greedy_with(|p| p.logprobs = Some(0));
        let token = Sampler::new(params, &[]).sample(&logits).expect("sample");
        assert_eq!(token.logprob, Some(log_softmax(&logits)[2]));
        assert!(token.top.is_empty());
        let token = Sampler::new(SamplingParams::greedy(), &[])
            .sample(&logits)
            .expect("s");
        assert_eq!((token.logprob, token.top), (None, Vec::new()));
    }

    #[test]
    fn validate_names_the_field_the_limit_and_the_value() {
        let cases: Vec<(SamplingParams, &str, &str)> = vec![
            (
                with(|p| p.temperature = 2.5),
                "temperature",
                "[0, 2], got 2.5",
            ),
            (with(|p| p.temperature = f32::NAN), "temperature", "got NaN"),
            (with(|p| p.top_p = 1.5), "top_p", "(0, 1], got 1.5"),
            (with(|p| p.top_p = 0.0), "top_p", "(0, 1], got 0"),
            (with(|p| p.min_p = -0.1), "min_p", "[0, 1], got -0.1"),
            (
                with(|p| p.repetition_penalty = 0.0),
                "repetition_penalty",
                "> 0, got 0",
            ),
            (
                with(|p| p.presence_penalty = 2.1),
                "presence_penalty",
                "[-2, 2], got 2.1",
            ),
            (
                with(|p| p.frequency_penalty = -3.0),
                "frequency_penalty",
                "[-2, 2], got -3",
            ),
            (
                with(|p| p.logit_bias = vec![(10, 1.0)]),
                "logit_bias",
                "id 10 must be < vocabulary size 10",
            ),
            (
                with(|p| p.logit_bias = vec![(1, 150.0)]),
                "logit_bias",
                "[-100, 100], got 150",
            ),
            (with(|p| p.logprobs = Some(21)), "logprobs", "<= 20, got 21"),
        ];
        for (params, field, text) in cases {
            match params.validate(10) {
                Err(SamplingError::InvalidParam { field: f, message }) => {
                    assert_eq!(f, field);
                    assert!(message.starts_with(field), "{message}");
                    assert!(message.contains(text), "{message:?} lacks {text:?}");
                }
                other => panic!("{field}: expected an error, got {other:?}"),
            }
        }
        let edges = SamplingParams {
            temperature: 2.0,
            top_p: 1.0,
            min_p: 1.0,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            logit_bias: vec![(9, -100.0), (0, 100.0)],
            logprobs: Some(20),
            ..SamplingParams::default()
        };
        assert_eq!(edges.validate(10), Ok(()));
        assert_eq!(
            with(|p| p.top_p = 1.5)
                .validate(10)
                .map_err(|e| e.to_string()),
            Err("top_p must be in (0, 1], got 1.5".to_string())
        );
    }

    #[test]
    fn sampler_rejects_bad_params_and_mismatched_logits() {
        let params = with(|p| p.logit_bias = vec![(5, 1.0)]);
        let mut sampler = seeded(params, 1);
        assert!(matches!(
            sampler.sample(&[0.0; 4]),
            Err(SamplingError::InvalidParam {
                field: "logit_bias",
                ..
            })
        ));
        assert!(sampler.sample(&[0.0; 6]).is_ok());
        let err = sampler.sample(&[0.0; 7]);
        assert_eq!(
            err,
            Err(SamplingError::BadLogits {
                expected: 6,
                found: 7
            })
        );
        let mut fresh = seeded(SamplingParams::default(), 1);
        assert_eq!(fresh.sample(&[]), Err(SamplingError::EmptyLogits));
    }

    #[test]
    fn plus_infinity_logits_share_the_mass() {
        let logits = [f32::INFINITY, 0.0, f32::INFINITY];
        let lp = log_softmax(&logits);
        assert_eq!(lp[1], f32::NEG_INFINITY);
        assert!(
            (lp[0] - 0.5f32.ln()).abs() < 1e-6 && lp[0] == lp[2],
            "{lp:?}"
        );
        let counts = frequencies(&mut seeded(SamplingParams::default(), 3), &logits, 1000);
        assert_eq!(counts[1], 0);
        assert!(counts[0] > 400 && counts[2] > 400, "{counts:?}");
    }

    #[test]
    fn log_softmax_sums_to_one_and_is_stable_for_large_logits() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for logits in [
            random_logits(&mut rng, 50_000, 10.0),
            vec![1e4, 1e4 - 1.0, -1e4, 0.0],
        ] {
            let lp = log_softmax(&logits);
            assert!(lp.iter().all(|x| !x.is_nan()));
            let total: f64 = lp.iter().map(|&x| f64::from(x).exp()).sum();
            assert!((total - 1.0).abs() < 1e-5, "{total}");
        }
        let lp = log_softmax(&[1e4, 1e4 - 1.0]);
        let expected = -(1.0f32 + (-1.0f32).exp()).ln();
        assert!((lp[0] - expected).abs() < 1e-6, "{lp:?}");
        assert_eq!(log_softmax(&[f32::NAN, 0.0])[0], f32::NEG_INFINITY);
        assert!(log_softmax(&[f32::NEG_INFINITY; 3])
            .iter()
            .all(|&x| x == f32::NEG_INFINITY));
    }

    #[test]
    fn params_deserialise_with_defaults_for_missing_fields() {
        let params: SamplingParams =
            serde_json::from_str(r#"{"temperature":0.2,"top_k":40}"#).expect("json");
        let expected = SamplingParams {
            temperature: 0.2,
            top_k: 40,
            ..SamplingParams::default()
        };
        assert_eq!(params, expected);
    }

    /// The tokens a naive sort-based sampler may draw at the first step, or `None` when none
    /// can be (all -inf). Boundaries get a little slack for summation order.
    fn reference_allowed(logits: &[f32], p: &SamplingParams, prompt: &[u32]) -> Option<Vec<bool>> {
        let mut x: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
        for &(id, b) in &p.logit_bias {
            x[id as usize] += f64::from(b);
        }
        let rep = f64::from(p.repetition_penalty);
        let mut seen: Vec<u32> = prompt
            .iter()
            .copied()
            .filter(|&id| (id as usize) < x.len())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            let v = &mut x[id as usize];
            *v = if *v > 0.0 { *v / rep } else { *v * rep };
        }
        let mut order: Vec<usize> = (0..x.len()).filter(|&i| x[i] > f64::NEG_INFINITY).collect();
        if order.is_empty() {
            return None;
        }
        order.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
        let mut allowed = vec![false; x.len()];
        if p.temperature == 0.0 {
            allowed[order[0]] = true;
            return Some(allowed);
        }
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let max = x[order[0]];
        let t = f64::from(p.temperature);
        let w: Vec<f64> = order.iter().map(|&i| ((x[i] - max) / t).exp()).collect();
        let total: f64 = w.iter().sum();
        let mut before = 0.0;
        for (rank, &i) in order.iter().enumerate() {
            let in_nucleus = rank == 0 || before / total < f64::from(p.top_p) + 1e-4;
            let above_min_p = w[rank] >= f64::from(p.min_p) * (1.0 - 1e-4);
            allowed[i] = in_nucleus && above_min_p && w[rank] > 0.0;
            before += w[rank];
        }
        Some(allowed)
    }

    fn arb_logit() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -30.0f32..30.0,
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::NAN),
            1 => (0u8..4).prop_map(f32::from),
        ]
    }

    fn arb_params(vocab: usize) -> impl Strategy<Value = SamplingParams> {
        let vocab = vocab as u32;
        (
            (
                prop_oneof![1 => Just(0.0f32), 4 => 0.01f32..2.0],
                0usize..8,
                prop_oneof![1 => Just(1.0f32), 2 => 0.01f32..1.0],
            ),
            (
                prop_oneof![1 => Just(0.0f32), 1 => 0.0f32..1.0],
                0.5f32..2.0,
                -2.0f32..2.0,
                -2.0f32..2.0,
            ),
            proptest::collection::vec(
                (
                    0..vocab,
                    prop_oneof![Just(-100.0f32), Just(100.0), -5.0f32..5.0],
                ),
                0..3,
            ),
            (any::<u64>(), proptest::option::of(0usize..=20)),
        )
            .prop_map(
                |(
                    (temperature, top_k, top_p),
                    (min_p, rep, presence, frequency),
                    logit_bias,
                    (seed, logprobs),
                )| {
                    SamplingParams {
                        temperature,
                        top_k,
                        top_p,
                        min_p,
                        repetition_penalty: rep,
                        presence_penalty: presence,
                        frequency_penalty: frequency,
                        logit_bias,
                        seed: Some(seed),
                        logprobs,
                    }
                },
            )
    }

    fn arb_case() -> impl Strategy<Value = (Vec<f32>, SamplingParams, Vec<u32>)> {
        (1usize..64).prop_flat_map(|vocab| {
            (
                proptest::collection::vec(arb_logit(), vocab),
                arb_params(vocab),
                proptest::collection::vec(0..vocab as u32 + 2, 0..6),
            )
        })
    }

    proptest! {
        #[test]
        fn sampled_ids_are_in_vocab_and_never_masked((logits, params, prompt) in arb_case()) {
            let allowed = reference_allowed(&logits, &params, &prompt);
            let mut sampler = Sampler::new(params.clone(), &prompt);
            let Some(allowed) = allowed else {
                prop_assert_eq!(sampler.sample(&logits), Err(SamplingError::NonFinite));
                return Ok(());
            };
            let token = sampler.sample(&logits).expect("sample");
            prop_assert!(allowed[token.id as usize], "id {} not allowed: {:?}", token.id, allowed);
            if let Some(n) = params.logprobs {
                prop_assert_eq!(token.top.len(), n.min(logits.len()));
                let raw = log_softmax(&logits);
                prop_assert_eq!(token.logprob, Some(raw[token.id as usize]));
                prop_assert!(token.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
            }
            // Later steps, with penalties building up, stay in range and do not panic.
            for _ in 0..5 {
                match sampler.sample(&logits) {
                    Ok(token) => prop_assert!((token.id as usize) < logits.len()),
                    Err(e) => prop_assert_eq!(e, SamplingError::NonFinite),
                }
            }
        }
    }
}
