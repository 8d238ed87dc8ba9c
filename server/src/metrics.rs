//! Prometheus metrics, rendered in the text exposition format.
//!
//! Hand-rolled (a few counters and histograms) to keep the dependency tree
//! lean. Labels are only route templates and status codes: never prompt
//! text, API keys or other request content.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use confidant_inference::engine::EngineStats;

/// A fixed-bucket histogram.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation in seconds.
    pub fn observe(&self, secs: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {n}");
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const TOKEN_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
];

/// The server's metrics.
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Prompt tokens of completed API requests.
    pub prompt_tokens: AtomicU64,
    /// Completion tokens of completed API requests.
    pub completion_tokens: AtomicU64,
    /// Streams whose client went away before the end.
    pub client_disconnects: AtomicU64,
    /// Time from request arrival to the first generated text.
    pub time_to_first_token: Histogram,
    /// Time between consecutive generated tokens.
    pub time_per_output_token: Histogram,
    /// Whole request duration.
    pub request_duration: Histogram,
    /// Start-up failures by stage (`key_broker`, `decrypt`, `load`, ...).
    startup_failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            client_disconnects: AtomicU64::new(0),
            time_to_first_token: Histogram::new(LATENCY_BUCKETS),
            time_per_output_token: Histogram::new(TOKEN_BUCKETS),
            request_duration: Histogram::new(LATENCY_BUCKETS),
            startup_failures: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// Counts one failed start-up attempt at `stage`.
    pub fn startup_failure(&self, stage: &'static str) {
        let mut m = self
            .startup_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(stage).or_default() += 1;
    }

    /// Counts one answered request.
    pub fn request(&self, route: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((route.to_owned(), status)).or_default() += 1;
    }

    /// Renders everything, including the engine's live counters.
    pub fn render(&self, engine: Option<&EngineStats>, ready: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP confidant_http_requests_total HTTP requests by route and status.\n# TYPE confidant_http_requests_total counter"
        );
        {
            let m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "confidant_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(
            &mut out,
            "confidant_prompt_tokens_total",
            "Prompt tokens of answered completion requests.",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "confidant_completion_tokens_total",
            "Generated tokens of answered completion requests.",
            self.completion_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "confidant_client_disconnects_total",
            "Streams whose client disconnected before the end.",
            self.client_disconnects.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "confidant_ready",
            "1 when the model is loaded and serving.",
            u64::from(ready),
        );
        if let Some(s) = engine {
            gauge(
                &mut out,
                "confidant_queue_depth",
                "Requests waiting for a generation slot.",
                s.queued.load(Ordering::Relaxed) as u64,
            );
            gauge(
                &mut out,
                "confidant_active_sequences",
                "Sequences generating now.",
                s.active.load(Ordering::Relaxed) as u64,
            );
            counter(
                &mut out,
                "confidant_engine_cancelled_total",
                "Requests the engine dropped because their client went away.",
                s.cancelled.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "confidant_engine_completed_total",
                "Requests the engine completed.",
                s.completed.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "confidant_engine_prompt_tokens_total",
                "Prompt tokens the engine processed.",
                s.prompt_tokens.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "confidant_engine_generated_tokens_total",
                "Tokens the engine generated.",
                s.completion_tokens.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "confidant_engine_steps_total",
                "Batched forward passes.",
                s.steps.load(Ordering::Relaxed),
            );
        }
        self.time_to_first_token.render(
            &mut out,
            "confidant_time_to_first_token_seconds",
            "Time from request arrival to the first generated text.",
        );
        self.time_per_output_token.render(
            &mut out,
            "confidant_time_per_output_token_seconds",
            "Time between generated tokens.",
        );
        self.request_duration.render(
            &mut out,
            "confidant_request_duration_seconds",
            "Completion request duration.",
        );
        let _ = writeln!(
            out,
            "# HELP confidant_startup_failures_total Failed start-up attempts by stage (the reason is in the log and /readyz).\n# TYPE confidant_startup_failures_total counter"
        );
        for (stage, n) in self
            .startup_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "confidant_startup_failures_total{{stage=\"{stage}\"}} {n}"
            );
        }
        out
    }
}
