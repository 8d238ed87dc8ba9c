//! `confidant watermark`: key generation and detection, plus the parameter
//! flags `generate` and `serve` share.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use confidant_inference::tokenizer::MAX_TEXT_BYTES;
use confidant_inference::watermark::{
    DEFAULT_MIN_TOKENS, DEFAULT_Z_THRESHOLD, DetectOptions, SeedingScheme, Verdict, Watermark,
    WatermarkKey, WatermarkKind, WatermarkParams,
};
use confidant_inference::{Gguf, Tokenizer};

/// `confidant watermark …`
#[derive(clap::Subcommand)]
pub enum WatermarkCmd {
    /// Generate a new watermark key into a new file (mode 0600)
    Keygen {
        /// Where to write the key (an existing file is never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Detect the watermark in a text
    Detect {
        /// Key file.
        #[arg(long)]
        key: PathBuf,
        /// The text to test.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        text: Option<String>,
        /// A file holding the text to test (`-`: standard input).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// GGUF model whose tokenizer generated the text.
        #[arg(long, env = "CONFIDANT_MODEL")]
        model: PathBuf,
        /// z-score at or above which the text is "watermarked".
        #[arg(long, default_value_t = DEFAULT_Z_THRESHOLD)]
        threshold: f64,
        /// Fewer scored tokens than this give "insufficient".
        #[arg(long, default_value_t = DEFAULT_MIN_TOKENS)]
        min_tokens: usize,
        #[command(flatten)]
        params: ParamArgs,
    },
}

/// Watermark parameters as flags (and `CONFIDANT_WATERMARK_*` variables);
/// each overrides the configured or default value.
#[derive(clap::Args, Clone, Default)]
pub struct ParamArgs {
    /// green-list (default) or gumbel-max.
    #[arg(long = "watermark-kind", env = "CONFIDANT_WATERMARK_KIND")]
    pub kind: Option<WatermarkKind>,
    /// Green fraction γ.
    #[arg(long = "watermark-gamma", env = "CONFIDANT_WATERMARK_GAMMA")]
    pub gamma: Option<f64>,
    /// Logit bias δ added to green tokens.
    #[arg(long = "watermark-delta", env = "CONFIDANT_WATERMARK_DELTA")]
    pub delta: Option<f32>,
    /// Context tokens that seed the green list.
    #[arg(
        long = "watermark-context-width",
        env = "CONFIDANT_WATERMARK_CONTEXT_WIDTH"
    )]
    pub context_width: Option<usize>,
    /// Seeding scheme: hmac-sha256-lefthash or hmac-sha256-minhash.
    #[arg(long = "watermark-scheme", env = "CONFIDANT_WATERMARK_SCHEME")]
    pub scheme: Option<SeedingScheme>,
    /// No bias at steps whose next-token entropy is below this many nats (0: none).
    #[arg(
        long = "watermark-min-entropy",
        env = "CONFIDANT_WATERMARK_MIN_ENTROPY"
    )]
    pub min_entropy: Option<f32>,
}

impl ParamArgs {
    /// `base` with the flags that were given applied, checked.
    pub fn apply(&self, base: WatermarkParams) -> anyhow::Result<WatermarkParams> {
        Ok(WatermarkParams::new(
            self.gamma.unwrap_or(base.gamma()),
            self.delta.unwrap_or(base.delta()),
            self.context_width.unwrap_or(base.context_width()),
            self.scheme.unwrap_or(base.scheme()),
        )?
        .with_min_entropy(self.min_entropy.unwrap_or(base.min_entropy()))?
        .with_kind(self.kind.unwrap_or(base.kind())))
    }
}

/// Loads a key file and builds the watermark from defaults and flags.
pub fn load(key: &Path, params: &ParamArgs) -> anyhow::Result<Watermark> {
    let key = WatermarkKey::load(key)?;
    Ok(Watermark::new(
        key,
        params.apply(WatermarkParams::default())?,
    ))
}

/// Runs a `watermark` subcommand.
pub fn run(cmd: WatermarkCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        WatermarkCmd::Keygen { out } => {
            let key = WatermarkKey::generate()?;
            key.write_new(&out)?;
            eprintln!("wrote watermark key {} to {}", key.id(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        WatermarkCmd::Detect {
            key,
            text,
            file,
            json,
            model,
            threshold,
            min_tokens,
            params,
        } => {
            if !threshold.is_finite() {
                anyhow::bail!("--threshold must be a finite number");
            }
            let wm = load(&key, &params)?;
            let text = match (text, file) {
                (Some(t), _) => t,
                (None, Some(f)) => read_text(&f)?,
                (None, None) => anyhow::bail!("pass --text or --file"),
            };
            let tokenizer = load_tokenizer(&model)?;
            let opts = DetectOptions {
                z_threshold: threshold,
                min_tokens,
            };
            let d = wm.detect_text(&tokenizer, &text, &opts)?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&d)?)?;
            } else {
                let verdict = match d.verdict {
                    Verdict::Watermarked => "watermarked",
                    Verdict::NotWatermarked => "not watermarked",
                    Verdict::Insufficient => "insufficient (text too short to decide)",
                };
                writeln!(
                    out,
                    "{verdict}: z = {:.2} (threshold {}), p = {:.3e}, {} of {} scored tokens green, key {}",
                    d.z, d.threshold, d.p_value, d.green_tokens, d.scored_tokens, d.key_id
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads a text file or standard input, bounded by the tokenizer's limit.
fn read_text(path: &Path) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let limit = MAX_TEXT_BYTES as u64;
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit + 1)
            .read_to_end(&mut buf)?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open {}", path.display()))?
            .take(limit + 1)
            .read_to_end(&mut buf)?;
    }
    if buf.len() as u64 > limit {
        anyhow::bail!("the text is larger than {limit} bytes");
    }
    String::from_utf8(buf).context("the text is not UTF-8")
}

fn load_tokenizer(model: &Path) -> anyhow::Result<Tokenizer> {
    let bytes =
        std::fs::read(model).with_context(|| format!("cannot read model {}", model.display()))?;
    let g = Gguf::parse(bytes.into())?;
    Ok(Tokenizer::from_gguf(&g)?)
}
