//! The native llama forward pass: weights read in place from the GGUF buffer,
//! SIMD quantized matmuls (`crate::kernels`), a preallocated KV cache per
//! sequence, and batching of any number of sequences (prefill chunks and
//! single decode steps mixed) into one pass.

use std::cell::RefCell;

use bytes::Bytes;
use candle_core::quantized::GgmlDType;
use half::f16;
use rayon::prelude::*;

use super::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::gguf::{Gguf, tensor_err};
use crate::kernels;
use crate::quant::{QK, QuantActs, WeightFormat, dequantize_row};

/// A quantized matrix living in the model buffer.
#[derive(Debug, Clone)]
struct QWeight {
    fmt: WeightFormat,
    rows: usize,
    cols: usize,
    range: std::ops::Range<usize>,
}

impl QWeight {
    fn load(g: &Gguf, name: &str, rows: usize, cols: usize) -> Result<Self> {
        let t = g.tensor(name)?;
        if t.dims != [rows, cols] {
            return Err(tensor_err(
                name,
                &format!("has shape {:?}, expected [{rows}, {cols}]", t.dims),
            ));
        }
        let fmt = WeightFormat::from_ggml(t.dtype)
            .ok_or_else(|| tensor_err(name, &format!("type {:?} has no native kernel", t.dtype)))?;
        if !cols.is_multiple_of(QK) {
            return Err(tensor_err(name, "row length is not a multiple of 32"));
        }
        Ok(Self {
            fmt,
            rows,
            cols,
            range: t.range,
        })
    }

    fn row_bytes(&self) -> usize {
        self.cols / QK * self.fmt.block_bytes()
    }
}

fn load_f32(g: &Gguf, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = g.tensor(name)?;
    if t.dims.iter().product::<usize>() != len {
        return Err(tensor_err(
            name,
            &format!("has {:?} elements, expected {len}", t.dims),
        ));
    }
    let b = g.tensor_bytes(&t);
    match t.dtype {
        GgmlDType::F32 => Ok(b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        GgmlDType::F16 => Ok(b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        other => Err(tensor_err(name, &format!("norm weights of type {other:?}"))),
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: QWeight,
    wk: QWeight,
    wv: QWeight,
    wo: QWeight,
    ffn_norm: Vec<f32>,
    gate: QWeight,
    up: QWeight,
    down: QWeight,
}

/// The native llama backend.
pub struct NativeLlama {
    bytes: Bytes,
    cfg: LlamaConfig,
    embed: QWeight,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: QWeight,
    theta_scale: f32,
    scratch: std::sync::Mutex<Buffers>,
}

/// Activation buffers of a forward pass, kept between passes.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    tmp: Vec<f32>,
    acts: QuantActs,
    rope: Vec<(f32, f32)>,
}

/// One sequence's key/value cache, allocated once for its whole length.
///
/// Keys and values are kept in half precision, as llama.cpp keeps them by
/// default: half the memory of f32, and the same rounding as the reference
/// implementation the greedy outputs are checked against.
pub struct KvCache {
    k: Vec<f16>,
    v: Vec<f16>,
    len: usize,
    cap: usize,
    n_kv: usize,
    head_dim: usize,
}

impl KvCache {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no token yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum tokens.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn base(&self, layer: usize, g: usize) -> usize {
        ((layer * self.n_kv + g) * self.cap) * self.head_dim
    }
}

/// Bytes one cached token takes for a config.
pub fn kv_bytes_per_token(cfg: &LlamaConfig) -> usize {
    2 * cfg.block_count * cfg.kv_dim() * std::mem::size_of::<f16>()
}

/// Input of one sequence to a batched forward pass.
pub struct NativeItem<'a> {
    /// Tokens to append.
    pub tokens: &'a [u32],
    /// The sequence's cache.
    pub cache: &'a mut KvCache,
    /// Whether to compute logits for the last token.
    pub want_logits: bool,
    /// Whether these tokens are prompt tokens (see [`AttentionOrder`]).
    pub prompt: bool,
}

/// Summation order of the attention products.
///
/// llama.cpp runs the f16 K·Q and P·V products through two different
/// kernels: tinyBLAS when a ubatch has several tokens (a prompt) and
/// `ggml_vec_dot_f16` for a single token (decoding). The orders differ in the
/// last bits, which is enough to flip near-tied greedy choices, so the native
/// backend follows the same split: prompt tokens use the tinyBLAS order,
/// generated tokens the `vec_dot` order. Either way the result depends only
/// on the sequence, never on how sequences were batched together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionOrder {
    /// One 8-lane accumulator per product (tinyBLAS).
    Blocked8,
    /// Four 8-lane accumulators over 32-element steps (`ggml_vec_dot_f16`).
    Strided32,
}

/// Per-thread attention scratch.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    scores: Vec<f32>,
    lanes: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// One query head against `n` cached positions (`k`, `v`: `n * hd` values).
///
/// The query is rounded to f16 (ggml converts it for the f16 K·Q product),
/// scores are scaled and soft-maxed with ggml's exp and summation order, the
/// probabilities rounded to f16 for the P·V product. Products of two f16
/// values are exact in f32, so only the order of the sums matters; `order`
/// picks which of llama.cpp's two kernels to follow.
fn attend(
    order: AttentionOrder,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    scale: f32,
    sc: &mut Scratch,
    out: &mut [f32],
) {
    let hd = q.len();
    let n = k.len() / hd;
    sc.q.clear();
    sc.q.extend(q.iter().map(|&x| f16::from_f32(x).to_f32()));
    let padded = n.div_ceil(8) * 8;
    sc.scores.clear();
    sc.scores.extend((0..n).map(|p| {
        let kp = &k[p * hd..(p + 1) * hd];
        let dot = match order {
            AttentionOrder::Blocked8 => kernels::dot_f16(&sc.q, kp),
            AttentionOrder::Strided32 => kernels::dot_f16_strided(&sc.q, kp),
        };
        dot * scale
    }));
    let max = sc.scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    sc.scores.resize(padded, f32::NEG_INFINITY);
    let sum = kernels::exp_sub_sum(&mut sc.scores, max);
    let inv = (1.0 / sum) as f32;
    // Per-lane partial sums of the P·V product: lane `p % L` takes position p.
    let lanes = match order {
        AttentionOrder::Blocked8 => 8,
        AttentionOrder::Strided32 => 32,
    };
    sc.lanes.clear();
    sc.lanes.resize(lanes * hd, 0.0);
    for p in 0..n {
        let w = f16::from_f32(sc.scores[p] * inv).to_f32();
        let l = p % lanes;
        kernels::axpy_f16(
            w,
            &v[p * hd..(p + 1) * hd],
            &mut sc.lanes[l * hd..(l + 1) * hd],
        );
    }
    let lane = |l: usize, i: usize| sc.lanes[l * hd + i];
    for (i, o) in out.iter_mut().enumerate() {
        let mut u = [0f32; 8];
        match order {
            AttentionOrder::Blocked8 => {
                for (j, uj) in u.iter_mut().enumerate() {
                    *uj = lane(j, i);
                }
                *o = kernels::hsum8(&u);
            }
            AttentionOrder::Strided32 => {
                for (j, uj) in u.iter_mut().enumerate() {
                    *uj = (lane(j, i) + lane(16 + j, i)) + (lane(24 + j, i) + lane(8 + j, i));
                }
                *o = kernels::hsum8_hadd(&u);
            }
        }
    }
}

impl NativeLlama {
    /// Maps the model's tensors; fails if any has no native kernel.
    pub fn load(g: &Gguf, cfg: &LlamaConfig) -> Result<Self> {
        let d = cfg.embedding_length;
        let kv = cfg.kv_dim();
        let ff = cfg.feed_forward_length;
        let embed = QWeight::load(g, "token_embd.weight", cfg.vocab_size, d)?;
        let output = if g.has_tensor("output.weight") {
            QWeight::load(g, "output.weight", cfg.vocab_size, d)?
        } else {
            embed.clone()
        };
        let mut layers = Vec::with_capacity(cfg.block_count);
        for i in 0..cfg.block_count {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: load_f32(g, &n("attn_norm"), d)?,
                wq: QWeight::load(g, &n("attn_q"), d, d)?,
                wk: QWeight::load(g, &n("attn_k"), kv, d)?,
                wv: QWeight::load(g, &n("attn_v"), kv, d)?,
                wo: QWeight::load(g, &n("attn_output"), d, d)?,
                ffn_norm: load_f32(g, &n("ffn_norm"), d)?,
                gate: QWeight::load(g, &n("ffn_gate"), ff, d)?,
                up: QWeight::load(g, &n("ffn_up"), ff, d)?,
                down: QWeight::load(g, &n("ffn_down"), d, ff)?,
            });
        }
        let output_norm = load_f32(g, "output_norm.weight", d)?;
        let theta_scale = cfg
            .rope_freq_base
            .powf(-2.0 / cfg.rope_dimension_count as f32);
        Ok(Self {
            bytes: g.bytes().clone(),
            cfg: cfg.clone(),
            embed,
            layers,
            output_norm,
            output,
            theta_scale,
            scratch: Default::default(),
        })
    }

    /// A cache for up to `capacity` tokens.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let n = self.cfg.block_count * self.cfg.kv_dim() * capacity;
        KvCache {
            k: vec![f16::ZERO; n],
            v: vec![f16::ZERO; n],
            len: 0,
            cap: capacity,
            n_kv: self.cfg.head_count_kv,
            head_dim: self.cfg.head_dim,
        }
    }

    fn w(&self, q: &QWeight) -> &[u8] {
        &self.bytes[q.range.clone()]
    }

    /// Runs all items' tokens through the model in one pass. The last-token
    /// logits of the items that asked for them are written to `logits` one
    /// row of `vocab_size` after the other; the result gives each item's row.
    pub fn forward(
        &self,
        items: &mut [NativeItem<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<Vec<Option<usize>>> {
        let cfg = &self.cfg;
        let (d, hd) = (cfg.embedding_length, cfg.head_dim);
        let (nh, nkv) = (cfg.head_count, cfg.head_count_kv);
        let kvd = cfg.kv_dim();
        let ff = cfg.feed_forward_length;

        // Token → (item, position) map; validate first so a bad item changes nothing.
        let mut tok_item = Vec::new();
        let mut tok_pos = Vec::new();
        let mut tok_order = Vec::new();
        for (i, it) in items.iter().enumerate() {
            if it.cache.len + it.tokens.len() > it.cache.cap {
                return Err(Error::ContextLength {
                    context: it.cache.cap,
                    prompt: it.cache.len,
                    requested: it.tokens.len(),
                });
            }
            for (j, &t) in it.tokens.iter().enumerate() {
                if t as usize >= cfg.vocab_size {
                    return Err(Error::Tokenizer(format!("token id {t} is out of range")));
                }
                tok_item.push(i);
                tok_pos.push(it.cache.len + j);
                tok_order.push(if it.prompt {
                    AttentionOrder::Blocked8
                } else {
                    AttentionOrder::Strided32
                });
            }
        }
        let t_all = tok_item.len();
        if t_all == 0 {
            return Ok(items.iter().map(|_| None).collect());
        }
        // Reused buffers: no allocation (and no page faults) per step.
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let Buffers {
            x,
            xn,
            q,
            k,
            v,
            att,
            g,
            u,
            tmp,
            acts,
            rope,
        } = &mut *guard;
        let fit = |b: &mut Vec<f32>, n: usize| {
            b.clear();
            b.resize(n, 0.0);
        };
        fit(x, t_all * d);
        fit(xn, t_all * d);
        fit(q, t_all * d);
        fit(k, t_all * kvd);
        fit(v, t_all * kvd);
        fit(att, t_all * d);
        fit(g, t_all * ff);
        fit(u, t_all * ff);

        // Embeddings.
        let erb = self.embed.row_bytes();
        let emb = self.w(&self.embed);
        for (row, &tok) in x
            .chunks_exact_mut(d)
            .zip(items.iter().flat_map(|i| i.tokens))
        {
            let t = tok as usize;
            dequantize_row(self.embed.fmt, &emb[t * erb..(t + 1) * erb], row);
        }

        // Rotary tables per token, computed the way ggml does (θ multiplied
        // step by step in f32), so results track llama.cpp closely.
        let half_rope = cfg.rope_dimension_count / 2;
        rope.clear();
        rope.resize(t_all * half_rope, (0.0, 0.0));
        for (t, &p) in tok_pos.iter().enumerate() {
            let mut theta = p as f32;
            for i in 0..half_rope {
                rope[t * half_rope + i] = (theta.cos(), theta.sin());
                theta *= self.theta_scale;
            }
        }

        let scale = 1.0 / (hd as f32).sqrt();

        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm(x, &layer.attn_norm, cfg.rms_norm_eps, xn);
            acts.quantize(xn, t_all, d);
            self.matmuls(
                acts,
                &mut [
                    (&layer.wq, &mut q[..]),
                    (&layer.wk, &mut k[..]),
                    (&layer.wv, &mut v[..]),
                ],
                tmp,
            );
            for t in 0..t_all {
                let r = &rope[t * half_rope..(t + 1) * half_rope];
                for h in 0..nh {
                    apply_rope(&mut q[t * d + h * hd..t * d + (h + 1) * hd], r);
                }
                for h in 0..nkv {
                    apply_rope(&mut k[t * kvd + h * hd..t * kvd + (h + 1) * hd], r);
                }
            }
            // Append this chunk's keys and values to each sequence's cache.
            for t in 0..t_all {
                let c = &mut *items[tok_item[t]].cache;
                for gi in 0..nkv {
                    let at = c.base(li, gi) + tok_pos[t] * hd;
                    let src = t * kvd + gi * hd..t * kvd + (gi + 1) * hd;
                    for (dst, &x) in c.k[at..at + hd].iter_mut().zip(&k[src.clone()]) {
                        *dst = f16::from_f32(x);
                    }
                    for (dst, &x) in c.v[at..at + hd].iter_mut().zip(&v[src]) {
                        *dst = f16::from_f32(x);
                    }
                }
            }
            // Causal attention, one task per (token, head), computed the way
            // llama.cpp's CPU backend computes it with its default f16 KV
            // cache (tinyBLAS f16 products, ggml's exp and softmax sums), so
            // greedy outputs track the reference implementation closely.
            {
                let caches: Vec<&KvCache> = items.iter().map(|i| &*i.cache).collect();
                let group = nh / nkv;
                let q = &q;
                att.par_chunks_mut(hd).enumerate().for_each(|(idx, out)| {
                    let (t, h) = (idx / nh, idx % nh);
                    let c = caches[tok_item[t]];
                    let pos = tok_pos[t];
                    let base = c.base(li, h / group);
                    SCRATCH.with_borrow_mut(|sc| {
                        attend(
                            tok_order[t],
                            &q[t * d + h * hd..t * d + (h + 1) * hd],
                            &c.k[base..base + (pos + 1) * hd],
                            &c.v[base..base + (pos + 1) * hd],
                            scale,
                            sc,
                            out,
                        );
                    });
                });
            }
            acts.quantize(att, t_all, d);
            self.matmuls(acts, &mut [(&layer.wo, &mut xn[..])], tmp);
            add_in_place(x, xn);

            rms_norm(x, &layer.ffn_norm, cfg.rms_norm_eps, xn);
            acts.quantize(xn, t_all, d);
            self.matmuls(
                acts,
                &mut [(&layer.gate, &mut g[..]), (&layer.up, &mut u[..])],
                tmp,
            );
            kernels::silu_mul(g, u);
            acts.quantize(g, t_all, ff);
            self.matmuls(acts, &mut [(&layer.down, &mut xn[..])], tmp);
            add_in_place(x, xn);
        }

        for it in items.iter_mut() {
            it.cache.len += it.tokens.len();
        }

        // Logits only for the last token of the items that want them.
        let mut last_rows = Vec::new();
        let mut end = 0;
        for it in items.iter() {
            end += it.tokens.len();
            if it.want_logits && !it.tokens.is_empty() {
                last_rows.push(end - 1);
            }
        }
        let mut results: Vec<Option<usize>> = items.iter().map(|_| None).collect();
        if last_rows.is_empty() {
            return Ok(results);
        }
        let n = last_rows.len();
        let h = xn;
        fit(h, n * d);
        for (i, &r) in last_rows.iter().enumerate() {
            rms_norm(
                &x[r * d..(r + 1) * d],
                &self.output_norm,
                cfg.rms_norm_eps,
                &mut h[i * d..(i + 1) * d],
            );
        }
        acts.quantize(h, n, d);
        let vocab = cfg.vocab_size;
        fit(logits, n * vocab);
        self.matmuls(acts, &mut [(&self.output, &mut logits[..])], tmp);
        let mut row = 0;
        for (res, it) in results.iter_mut().zip(items.iter()) {
            if it.want_logits && !it.tokens.is_empty() {
                *res = Some(row);
                row += 1;
            }
        }
        Ok(results)
    }

    /// Runs several matrix products on the same activations in one parallel
    /// region, split across the thread pool by row blocks. Outputs are
    /// token-major (`out[t * rows + r]`).
    fn matmuls(&self, acts: &QuantActs, jobs: &mut [(&QWeight, &mut [f32])], tmp: &mut Vec<f32>) {
        let t = acts.rows;
        let total_rows: usize = jobs.iter().map(|(w, _)| w.rows).sum();
        let threads = rayon::current_num_threads().max(1);
        let per_task = total_rows.div_ceil(threads * 4).max(16);
        tmp.resize(total_rows * t, 0.0);
        let mut tasks = Vec::new();
        let mut rest: &mut [f32] = &mut tmp[..];
        for (w, _) in jobs.iter() {
            debug_assert_eq!(w.cols, acts.cols);
            let (mine, r) = rest.split_at_mut(w.rows * t);
            rest = r;
            let bytes = self.w(w);
            let rb = w.row_bytes();
            for (i, o) in mine.chunks_mut(per_task * t).enumerate() {
                tasks.push((w.fmt, &bytes[i * per_task * rb..], o));
            }
        }
        tasks.into_par_iter().for_each(|(fmt, wb, o)| {
            kernels::matmul_rows(fmt, wb, o.len() / t, acts, o);
        });
        let mut off = 0;
        for (w, out) in jobs.iter_mut() {
            let src = &tmp[off..off + w.rows * t];
            if t == 1 {
                out[..w.rows].copy_from_slice(src);
            } else {
                for (r, col) in src.chunks_exact(t).enumerate() {
                    for (ti, &val) in col.iter().enumerate() {
                        out[ti * w.rows + r] = val;
                    }
                }
            }
            off += w.rows * t;
        }
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        // Squares in f32 summed in f64, as ggml does.
        let ss = xr.iter().map(|&v| f64::from(v * v)).sum::<f64>() / d as f64;
        let inv = 1.0 / (ss as f32 + eps).sqrt();
        for ((o, &xi), &wi) in or.iter_mut().zip(xr).zip(w) {
            *o = xi * inv * wi;
        }
    }
}

/// Rotates adjacent pairs (ggml "normal" rope mode, as llama models use),
/// with the fused multiply-adds ggml's compiled rope uses.
fn apply_rope(x: &mut [f32], table: &[(f32, f32)]) {
    for (i, &(c, s)) in table.iter().enumerate() {
        let (a, b) = (x[2 * i], x[2 * i + 1]);
        x[2 * i] = a.mul_add(c, -(b * s));
        x[2 * i + 1] = a.mul_add(s, b * c);
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    kernels::axpy(1.0, y, x);
}
