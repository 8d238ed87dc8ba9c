//! The engine: one scheduler thread owns the model and serves many requests
//! at once with continuous batching.
//!
//! Each scheduler step runs one batched forward pass holding one decode
//! token for every running sequence plus a bounded slice of waiting prompt
//! tokens, so a long prompt never stalls the others and no request starves:
//! admission is first-in first-out, and every admitted sequence advances by
//! one token per step. The queue of waiting requests is bounded (a full
//! queue is an immediate error, never an unbounded wait), KV memory is
//! bounded by a budget, and a request whose receiver is dropped (client gone)
//! is dropped before the next step.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::error::{Error, Result};
use crate::model::{Model, Sequence, Step};
use crate::sampling::{LogitChain, ProcessContext, Sampler, SamplingParams};
use crate::template::ChatTemplate;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Limits of the scheduler.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Sequences generating at the same time.
    pub max_batch: usize,
    /// Requests allowed to wait for a slot; more are refused at once.
    pub max_queue: usize,
    /// Prompt tokens processed per step, across all sequences.
    pub prefill_chunk: usize,
    /// Memory for KV caches of running sequences, in bytes.
    pub kv_budget_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 16,
            max_queue: 64,
            prefill_chunk: 256,
            kv_budget_bytes: 1 << 30,
        }
    }
}

/// Produces the logit processors every request gets (for example the
/// deployment's watermark). They run after the request's own penalties.
pub trait ProcessorFactory: Send + Sync {
    /// Processors for one new request.
    fn processors(&self) -> Vec<Box<dyn crate::sampling::LogitProcessor>>;
}

/// One generation request, already tokenized.
pub struct GenerationRequest {
    /// Prompt token ids (BOS included if the model wants one).
    pub prompt: Vec<u32>,
    /// Maximum tokens to generate.
    pub max_tokens: usize,
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Stop sequences: generation ends before the first occurrence, which is
    /// not part of the output.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop sequence.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (stop-sequence and end tokens included).
    pub completion_tokens: usize,
}

/// Summary sent when a request completes.
#[derive(Debug, Clone)]
pub struct Finish {
    /// Why it ended.
    pub reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Time spent waiting for a slot.
    pub queued: Duration,
    /// Time from admission to the first sampled token (prompt processing).
    pub prefill: Duration,
    /// Time from the first to the last sampled token.
    pub decode: Duration,
}

/// What a request's receiver gets, in order: deltas, then one `Done` or `Error`.
#[derive(Debug)]
pub enum Event {
    /// New output text (never containing a stop sequence) and how many tokens it covers.
    Delta {
        /// Text to append.
        text: String,
        /// Tokens generated since the previous delta.
        tokens: usize,
    },
    /// The request finished.
    Done(Finish),
    /// The request failed; nothing more follows.
    Error(Error),
}

/// Live counters (for metrics).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// Sequences generating.
    pub active: AtomicUsize,
    /// Prompt tokens processed.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub completion_tokens: AtomicU64,
    /// Requests dropped because their receiver went away.
    pub cancelled: AtomicU64,
    /// Requests completed.
    pub completed: AtomicU64,
    /// Forward passes run.
    pub steps: AtomicU64,
}

struct Job {
    req: GenerationRequest,
    sampler: Sampler,
    tx: UnboundedSender<Event>,
    submitted: Instant,
}

/// Handle to a running engine. Cheap to clone; the scheduler stops when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Job>,
    stats: Arc<EngineStats>,
    tokenizer: Arc<Tokenizer>,
    template: Option<Arc<ChatTemplate>>,
    config: EngineConfig,
    context: usize,
    kv_per_token: usize,
    backend: &'static str,
    threads: usize,
    factory: Option<Arc<dyn ProcessorFactory>>,
}

impl Engine {
    /// Starts the scheduler thread that owns `model`.
    pub fn start(
        model: Model,
        tokenizer: Arc<Tokenizer>,
        template: Option<ChatTemplate>,
        config: EngineConfig,
        factory: Option<Arc<dyn ProcessorFactory>>,
    ) -> Result<Self> {
        if config.max_batch == 0 || config.prefill_chunk == 0 {
            return Err(Error::InvalidParameter(
                "max_batch and prefill_chunk must be at least 1".into(),
            ));
        }
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let inner = Arc::new(Inner {
            tx,
            stats: stats.clone(),
            tokenizer: tokenizer.clone(),
            template: template.map(Arc::new),
            context: model.context_length(),
            kv_per_token: model.kv_bytes_per_token(),
            backend: model.backend_name(),
            threads: model.threads(),
            config: config.clone(),
            factory,
        });
        std::thread::Builder::new()
            .name("confidant-scheduler".into())
            .spawn(move || Scheduler::new(model, tokenizer, config, stats).run(rx))
            .map_err(|e| Error::InvalidParameter(format!("cannot start the scheduler: {e}")))?;
        Ok(Self { inner })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.inner.tokenizer
    }

    /// The chat template, if the model has one.
    pub fn template(&self) -> Option<&Arc<ChatTemplate>> {
        self.inner.template.as_ref()
    }

    /// Context length in tokens.
    pub fn context_length(&self) -> usize {
        self.inner.context
    }

    /// Backend name.
    pub fn backend(&self) -> &'static str {
        self.inner.backend
    }

    /// Compute threads.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Scheduler limits.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Live counters.
    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Checks a request against the context and queue limits and queues it.
    /// Events arrive on the returned receiver; dropping it cancels the request.
    pub fn submit(&self, req: GenerationRequest) -> Result<UnboundedReceiver<Event>> {
        let inner = &self.inner;
        if req.prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if req.prompt.len() + req.max_tokens > inner.context || req.prompt.len() >= inner.context {
            return Err(Error::ContextLength {
                context: inner.context,
                prompt: req.prompt.len(),
                requested: req.max_tokens,
            });
        }
        let vocab = inner.tokenizer.vocab_size();
        if let Some(t) = req.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Tokenizer(format!("token id {t} is out of range")));
        }
        let need = (req.prompt.len() + req.max_tokens) * inner.kv_per_token;
        if need > inner.config.kv_budget_bytes {
            return Err(Error::InvalidParameter(format!(
                "the request needs {need} bytes of KV cache, more than the budget of {}",
                inner.config.kv_budget_bytes
            )));
        }
        let mut chain = LogitChain::new();
        if let Some(f) = &inner.factory {
            for p in f.processors() {
                chain.push(p);
            }
        }
        let sampler = Sampler::new(req.params.clone(), chain)?;
        // Reserve a queue slot, or refuse at once.
        let q = &inner.stats.queued;
        let mut cur = q.load(Ordering::Relaxed);
        loop {
            if cur >= inner.config.max_queue {
                return Err(Error::QueueFull(cur));
            }
            match q.compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let (tx, rx) = unbounded_channel();
        let job = Job {
            req,
            sampler,
            tx,
            submitted: Instant::now(),
        };
        if inner.tx.send(job).is_err() {
            q.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::EngineStopped);
        }
        Ok(rx)
    }

    /// Runs one request to completion on the calling thread (blocking) and
    /// returns the text and the finish summary. For CLIs and tests; never
    /// call it from an async task.
    pub fn generate_blocking(&self, req: GenerationRequest) -> Result<(String, Finish)> {
        let mut rx = self.submit(req)?;
        let mut text = String::new();
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                Event::Delta { text: t, .. } => text.push_str(&t),
                Event::Done(f) => return Ok((text, f)),
                Event::Error(e) => return Err(e),
            }
        }
        Err(Error::EngineStopped)
    }
}

struct Running {
    job: Job,
    seq: Sequence,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    /// Prompt tokens already in the KV cache.
    fed: usize,
    decoder: StreamDecoder,
    /// Output text not yet sent (it could be the start of a stop sequence).
    held: String,
    unsent_tokens: usize,
    admitted: Instant,
    first_token: Option<Instant>,
    kv_bytes: usize,
}

impl Running {
    fn prompt_len(&self) -> usize {
        self.job.req.prompt.len()
    }

    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len()
    }
}

/// Below this many sequences in a step, sampling stays on the scheduler
/// thread (a thread start costs more than it saves).
const PARALLEL_SAMPLING_MIN: usize = 4;

/// Runs each listed sequence's sampler (processor chain included) on its
/// logits row and returns `(sequence index, token)`; `to_sample` is
/// `(sequence index, row)` in ascending sequence order. With enough sequences the work is split over `threads` scoped
/// threads: every sampler and row is its own, so the picks are the same as
/// sequentially, only sooner (the watermark's per-sequence pass over the
/// vocabulary would otherwise add up across a batch).
fn sample_rows(
    running: &mut [Running],
    to_sample: &[(usize, usize)],
    logits: &mut [f32],
    vocab: usize,
    threads: usize,
) -> Vec<(usize, u32)> {
    let mut rows: Vec<Option<&mut [f32]>> = logits.chunks_mut(vocab).map(Some).collect();
    let mut jobs: Vec<(usize, &mut Running, &mut [f32])> = Vec::with_capacity(to_sample.len());
    let mut wanted = to_sample.iter().peekable();
    for (i, r) in running.iter_mut().enumerate() {
        if let Some(&&(j, row)) = wanted.peek()
            && j == i
        {
            wanted.next();
            // The model returns one distinct row per sequence that wants one.
            match rows.get_mut(row).and_then(Option::take) {
                Some(l) => jobs.push((i, r, l)),
                None => tracing::error!(sequence = i, row, "no logits row to sample from"),
            }
        }
    }
    fn sample((i, r, logits): &mut (usize, &mut Running, &mut [f32])) -> (usize, u32) {
        let prompt_len = r.prompt_len();
        let ctx = ProcessContext::new(&r.tokens, prompt_len);
        (*i, r.job.sampler.sample(&ctx, logits))
    }
    if jobs.len() < PARALLEL_SAMPLING_MIN || threads < 2 {
        return jobs.iter_mut().map(sample).collect();
    }
    let per = jobs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks_mut(per)
            .map(|c| s.spawn(move || c.iter_mut().map(sample).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

struct Scheduler {
    model: Model,
    tokenizer: Arc<Tokenizer>,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    waiting: VecDeque<Job>,
    running: Vec<Running>,
    kv_used: usize,
    /// Logits of the last step, reused between steps.
    logits: Vec<f32>,
}

impl Scheduler {
    fn new(
        model: Model,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
        stats: Arc<EngineStats>,
    ) -> Self {
        Self {
            model,
            tokenizer,
            config,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            kv_used: 0,
            logits: Vec::new(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match rx.recv() {
                    Ok(j) => self.waiting.push_back(j),
                    Err(_) => return, // every handle dropped
                }
            }
            while let Ok(j) = rx.try_recv() {
                self.waiting.push_back(j);
            }
            self.drop_cancelled();
            self.admit();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|j| !j.tx.is_closed());
        let gone = before - self.waiting.len();
        if gone > 0 {
            self.stats.queued.fetch_sub(gone, Ordering::AcqRel);
            self.stats
                .cancelled
                .fetch_add(gone as u64, Ordering::Relaxed);
        }
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].job.tx.is_closed() {
                let r = self.running.remove(i);
                self.release(&r);
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            } else {
                i += 1;
            }
        }
    }

    fn release(&mut self, r: &Running) {
        self.kv_used -= r.kv_bytes;
        self.stats.active.fetch_sub(1, Ordering::AcqRel);
    }

    fn admit(&mut self) {
        while self.running.len() < self.config.max_batch {
            let Some(front) = self.waiting.front() else {
                break;
            };
            let cap = front.req.prompt.len() + front.req.max_tokens;
            let kv_bytes = cap * self.model.kv_bytes_per_token();
            // First in, first out: if the head does not fit yet, nobody jumps it.
            if self.kv_used + kv_bytes > self.config.kv_budget_bytes && !self.running.is_empty() {
                break;
            }
            let Some(job) = self.waiting.pop_front() else {
                break;
            };
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
            self.stats.active.fetch_add(1, Ordering::AcqRel);
            self.kv_used += kv_bytes;
            let seq = self.model.new_sequence(cap);
            let tokens = job.req.prompt.clone();
            self.running.push(Running {
                job,
                seq,
                tokens,
                fed: 0,
                decoder: StreamDecoder::default(),
                held: String::new(),
                unsent_tokens: 0,
                admitted: Instant::now(),
                first_token: None,
                kv_bytes,
            });
        }
    }

    fn step(&mut self) {
        // Per running sequence: (start, end, want_logits) into its tokens.
        // Decode tokens first (one per generating sequence), then prompt
        // chunks in admission order within the per-step budget.
        let mut ranges = vec![None; self.running.len()];
        for (i, r) in self.running.iter().enumerate() {
            if r.fed >= r.prompt_len() {
                let s = r.tokens.len() - 1;
                ranges[i] = Some((s, s + 1, true));
            }
        }
        let mut left = self.config.prefill_chunk;
        for (i, r) in self.running.iter().enumerate() {
            if r.fed < r.prompt_len() && left > 0 {
                let n = (r.prompt_len() - r.fed).min(left);
                left -= n;
                ranges[i] = Some((r.fed, r.fed + n, r.fed + n == r.prompt_len()));
            }
        }
        let mut steps = Vec::with_capacity(self.running.len());
        let mut idx = Vec::with_capacity(self.running.len());
        for (r, range) in self.running.iter_mut().zip(&ranges) {
            if let Some((start, end, want)) = *range {
                let prompt = start < r.job.req.prompt.len();
                steps.push(Step {
                    tokens: &r.tokens[start..end],
                    seq: &mut r.seq,
                    want_logits: want,
                    prompt,
                });
            }
        }
        for (i, range) in ranges.iter().enumerate() {
            if let Some((start, end, _)) = *range {
                idx.push((i, end - start));
            }
        }
        if steps.is_empty() {
            return;
        }
        let result = self.model.forward_into(&mut steps, &mut self.logits);
        drop(steps);
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        let mut done = vec![false; self.running.len()];
        match result {
            Ok(rows) => {
                let vocab = self.model.config().vocab_size;
                let mut logits = std::mem::take(&mut self.logits);
                // (sequence, logits row), in sequence order.
                let mut to_sample = Vec::with_capacity(idx.len());
                for ((i, n), row) in idx.into_iter().zip(rows) {
                    let r = &mut self.running[i];
                    if r.fed < r.prompt_len() {
                        r.fed += n;
                        self.stats
                            .prompt_tokens
                            .fetch_add(n as u64, Ordering::Relaxed);
                    }
                    if let Some(row) = row {
                        to_sample.push((i, row));
                    }
                }
                let threads = self.model.threads();
                let picks = sample_rows(&mut self.running, &to_sample, &mut logits, vocab, threads);
                for (i, next) in picks {
                    done[i] = self.take_token(i, next);
                }
                self.logits = logits;
            }
            Err(e) => {
                // A failed pass leaves the caches in an unknown state: fail
                // every sequence that took part, keep serving the others.
                tracing::error!(error = %e, "forward pass failed");
                for (i, _) in idx {
                    let _ = self.running[i]
                        .job
                        .tx
                        .send(Event::Error(Error::Forward(e.to_string())));
                    done[i] = true;
                }
            }
        }
        // Remove finished sequences, keeping admission order for the rest.
        for i in (0..done.len()).rev() {
            if done[i] {
                let r = self.running.remove(i);
                self.release(&r);
                self.stats.completed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Appends the sampled token `next` to running sequence `i`; returns
    /// true when it finished.
    fn take_token(&mut self, i: usize, next: u32) -> bool {
        let tok = self.tokenizer.clone();
        let r = &mut self.running[i];
        let prompt_len = r.prompt_len();
        let now = Instant::now();
        r.first_token.get_or_insert(now);
        r.tokens.push(next);
        r.unsent_tokens += 1;
        self.stats.completion_tokens.fetch_add(1, Ordering::Relaxed);

        let eog = !r.job.req.ignore_eos && tok.eog_ids().contains(&next);
        let mut reason = None;
        if eog {
            reason = Some(FinishReason::Stop);
        } else if !tok.is_special(next) {
            if let Some(text) = r.decoder.push(&tok, next) {
                r.held.push_str(&text);
            }
            if let Some(at) = find_stop(&r.held, &r.job.req.stop) {
                r.held.truncate(at);
                reason = Some(FinishReason::Stop);
            }
        }
        if reason.is_none()
            && (r.generated() >= r.job.req.max_tokens || r.tokens.len() >= r.seq.capacity())
        {
            reason = Some(FinishReason::Length);
        }
        if reason == Some(FinishReason::Length)
            && let Some(rest) = r.decoder.finish()
        {
            r.held.push_str(&rest);
        }
        // Send what can no longer become a stop sequence (everything, at the end).
        let keep = if reason.is_some() {
            0
        } else {
            stop_prefix_len(&r.held, &r.job.req.stop)
        };
        let cut = r.held.len() - keep;
        if cut > 0 || (reason.is_some() && r.unsent_tokens > 0) {
            let text: String = r.held.drain(..cut).collect();
            let n = std::mem::take(&mut r.unsent_tokens);
            let _ = r.job.tx.send(Event::Delta { text, tokens: n });
        }
        if let Some(reason) = reason {
            let first = r.first_token.unwrap_or(now);
            let finish = Finish {
                reason,
                usage: Usage {
                    prompt_tokens: prompt_len,
                    completion_tokens: r.generated(),
                },
                queued: r.admitted.duration_since(r.job.submitted),
                prefill: first.duration_since(r.admitted),
                decode: now.duration_since(first),
            };
            let _ = r.job.tx.send(Event::Done(finish));
            return true;
        }
        false
    }
}

/// Byte offset of the earliest stop sequence in `text`.
fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop
/// sequence (that much must be held back), on a char boundary.
fn stop_prefix_len(text: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for s in stops {
        for (k, _) in s.char_indices().skip(1) {
            // s[..k] is a proper prefix of s.
            if k > keep && text.ends_with(&s[..k]) {
                keep = k;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequences_are_found_and_partial_ones_held() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(find_stop("abc\n\nx", &stops), Some(3));
        assert_eq!(find_stop("abcEN", &stops), None);
        assert_eq!(stop_prefix_len("abcEN", &stops), 2);
        assert_eq!(stop_prefix_len("abc\n", &stops), 1);
        assert_eq!(stop_prefix_len("abc", &stops), 0);
        let multibyte = vec!["é!".to_string()];
        assert_eq!(stop_prefix_len("café", &multibyte), "é".len());
    }
}
