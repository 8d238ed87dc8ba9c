//! `confidant receipt verify`: checks a completion's receipt against the
//! attestation document (`confidant verify --save-document`), the request
//! body sent and the response received.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use confidant_client::{AttestationDocument, Receipt};

/// Largest file read.
const MAX_FILE: u64 = 16 << 20;

/// Receipt commands.
#[derive(clap::Subcommand)]
pub enum ReceiptCmd {
    /// Verify a receipt; exit 0 when it verifies, 1 otherwise.
    Verify(VerifyReceiptArgs),
}

/// Flags.
#[derive(clap::Args)]
pub struct VerifyReceiptArgs {
    /// The attestation document the server's key was verified in.
    #[arg(long)]
    document: PathBuf,
    /// The exact request body sent.
    #[arg(long)]
    request: PathBuf,
    /// The non-streamed response JSON (receipt and text are taken from it).
    #[arg(long, conflicts_with_all = ["receipt", "response_text"])]
    response: Option<PathBuf>,
    /// The receipt: JSON, or the `x-confidant-receipt` header value.
    #[arg(long, requires = "response_text")]
    receipt: Option<PathBuf>,
    /// The response text (message content, or the streamed deltas joined).
    #[arg(long, requires = "receipt")]
    response_text: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn read(p: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::new();
    std::fs::File::open(p)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", p.display()))?
        .take(MAX_FILE + 1)
        .read_to_end(&mut v)?;
    anyhow::ensure!(v.len() as u64 <= MAX_FILE, "{} is too large", p.display());
    Ok(v)
}

/// Runs a `receipt` subcommand.
pub fn run(cmd: ReceiptCmd) -> anyhow::Result<ExitCode> {
    let ReceiptCmd::Verify(a) = cmd;
    let doc: AttestationDocument = serde_json::from_slice(&read(&a.document)?).map_err(|e| {
        anyhow::anyhow!("{}: not an attestation document: {e}", a.document.display())
    })?;
    let request = read(&a.request)?;
    let (receipt, text) = match (&a.response, &a.receipt, &a.response_text) {
        (Some(resp), _, _) => {
            let v: serde_json::Value = serde_json::from_slice(&read(resp)?)?;
            let r: Receipt = serde_json::from_value(v["receipt"].clone())
                .map_err(|e| anyhow::anyhow!("the response carries no valid receipt: {e}"))?;
            let c = &v["choices"][0];
            let text = c["message"]["content"]
                .as_str()
                .or_else(|| c["text"].as_str())
                .unwrap_or_default()
                .to_owned();
            (r, text)
        }
        (None, Some(r), Some(t)) => {
            let raw = read(r)?;
            let r = match Receipt::from_json(&raw) {
                Ok(r) => r,
                Err(_) => Receipt::from_header_value(String::from_utf8_lossy(&raw).trim())?,
            };
            (r, String::from_utf8(read(t)?)?)
        }
        _ => anyhow::bail!("pass --response FILE, or --receipt FILE and --response-text FILE"),
    };
    match receipt.verify(&doc, &request, &text) {
        Ok(()) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "receipt": receipt.body})
                );
            } else {
                println!(
                    "receipt VALID: {} by key sha256 {} for model {} ({} completion tokens)",
                    receipt.body.id,
                    receipt.body.tls_spki_sha256,
                    receipt.body.model_sha256,
                    receipt.body.completion_tokens
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "error": e.to_string()})
                );
            }
            eprintln!("receipt INVALID: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
