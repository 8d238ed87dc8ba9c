//! `confidant model`: encrypt, inspect and decrypt model containers
//! (`keys/FORMAT.md`).
//!
//! Outputs are written to a temporary file in the target directory and
//! renamed into place only when complete (for `decrypt`: only after every
//! chunk authenticated and the plaintext digest matched), so a failure
//! leaves no output file behind. Existing files are never overwritten.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use confidant_keys::{
    ChunkSize, DataKey, Decryptor, EncryptParams, Header, KekRef, KeyId, MetadataText, ModelFormat,
    PlaintextInfo, WrappedKey, encrypt, unwrap_for_container,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Model container commands.
#[derive(clap::Subcommand)]
pub enum ModelCmd {
    /// Encrypt a model file under a fresh data key, wrapped by a KEK; the
    /// wrapped key is written beside the output as `<out>.key`.
    Encrypt {
        /// Plaintext model (GGUF or safetensors).
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Container to write (conventionally `*.cmdl`).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Key id naming the data key (1-64 of A-Z a-z 0-9 . _ : -).
        #[arg(long, value_name = "ID")]
        key_id: KeyId,
        /// Key-encryption key: `file:PATH` or a `pkcs11:` URI.
        #[arg(long, value_name = "file:PATH|pkcs11:URI")]
        kek: KekRef,
        /// Model name (metadata, stored in clear).
        #[arg(long, value_name = "N", default_value = "")]
        name: String,
        /// License (metadata, stored in clear).
        #[arg(long, value_name = "L", default_value = "")]
        license: String,
        /// Model format; guessed from the file's first bytes when omitted.
        #[arg(long, value_name = "gguf|safetensors")]
        format: Option<ModelFormat>,
        /// Plaintext bytes per chunk (4096..=16777216).
        #[arg(long, value_name = "BYTES", default_value_t = confidant_keys::DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
    },
    /// Print a container's header (no secrets; the key is not needed).
    Inspect {
        /// Container file.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Decrypt and verify a container (for the model owner's own checks).
    Decrypt {
        /// Container file.
        #[arg(long = "in", value_name = "FILE.cmdl")]
        input: PathBuf,
        /// Plaintext to write; created only after full verification.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Key-encryption key: `file:PATH` or a `pkcs11:` URI.
        #[arg(long, value_name = "file:PATH|pkcs11:URI")]
        kek: KekRef,
        /// Wrapped data key [default: <in>.key].
        #[arg(long, value_name = "FILE")]
        wrapped_key: Option<PathBuf>,
    },
}

/// Runs a `model` subcommand.
pub fn run(cmd: ModelCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelCmd::Encrypt {
            input,
            out,
            key_id,
            kek,
            name,
            license,
            format,
            chunk_size,
        } => encrypt_cmd(EncryptCmd {
            input,
            out,
            key_id,
            kek,
            name,
            license,
            format,
            chunk_size,
        }),
        ModelCmd::Inspect { file, json } => inspect_cmd(&file, json),
        ModelCmd::Decrypt {
            input,
            out,
            kek,
            wrapped_key,
        } => {
            let wrapped_key = wrapped_key.unwrap_or_else(|| key_path_for(&input));
            decrypt_cmd(&input, &out, &kek, &wrapped_key)
        }
    }
}

struct EncryptCmd {
    input: PathBuf,
    out: PathBuf,
    key_id: KeyId,
    kek: KekRef,
    name: String,
    license: String,
    format: Option<ModelFormat>,
    chunk_size: u32,
}

/// `<path>.key`
fn key_path_for(container: &Path) -> PathBuf {
    let mut s = container.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

/// A progress bar on stderr, only when stderr is a terminal.
fn progress(len: u64, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what);
    pb
}

/// A temporary file beside `target`, to be renamed onto it when complete.
fn temp_beside(target: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".confidant-partial-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))
}

fn refuse_existing(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        bail!(
            "{} already exists; refusing to overwrite it",
            path.display()
        );
    }
    Ok(())
}

fn encrypt_cmd(c: EncryptCmd) -> anyhow::Result<ExitCode> {
    let key_out = key_path_for(&c.out);
    refuse_existing(&c.out)?;
    refuse_existing(&key_out)?;
    let chunk_size = ChunkSize::new(c.chunk_size)?;
    let name = MetadataText::new(&c.name)?;
    let license = MetadataText::new(&c.license)?;
    // Open the KEK first: a wrong PIN or path should fail before any work.
    let kek = c
        .kek
        .open()
        .with_context(|| format!("opening KEK {}", c.kek))?;

    let open_input =
        || File::open(&c.input).with_context(|| format!("opening {}", c.input.display()));
    let format = match c.format {
        Some(f) => f,
        None => {
            let mut prefix = Vec::with_capacity(16);
            open_input()?.take(16).read_to_end(&mut prefix)?;
            ModelFormat::sniff(&prefix).with_context(|| {
                format!(
                    "{} is neither GGUF nor safetensors; pass --format",
                    c.input.display()
                )
            })?
        }
    };
    let len = open_input()?.metadata()?.len();

    let pb = progress(len, "hashing");
    let info =
        PlaintextInfo::compute(pb.wrap_read(BufReader::with_capacity(1 << 20, open_input()?)))?;
    pb.finish_and_clear();

    let key = DataKey::generate()?;
    let wrapped = kek.wrap(&c.key_id, &key)?;
    let params = EncryptParams {
        key_id: c.key_id.clone(),
        format,
        name,
        license,
        chunk_size,
    };

    let mut tmp_key = temp_beside(&key_out)?;
    tmp_key.write_all(&wrapped.to_bytes())?;
    tmp_key.as_file().sync_all()?;

    let tmp = temp_beside(&c.out)?;
    let pb = progress(info.len, "encrypting");
    {
        let reader = pb.wrap_read(BufReader::with_capacity(1 << 20, open_input()?));
        let mut writer = BufWriter::with_capacity(1 << 20, tmp.as_file());
        encrypt(&key, &params, &info, reader, &mut writer)
            .with_context(|| format!("encrypting {}", c.input.display()))?;
        writer.flush()?;
    }
    pb.finish_and_clear();
    tmp.as_file().sync_all()?;

    tmp_key
        .persist_noclobber(&key_out)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", key_out.display()))?;
    if let Err(e) = tmp.persist_noclobber(&c.out) {
        let _ = std::fs::remove_file(&key_out);
        return Err(e.error).with_context(|| format!("writing {}", c.out.display()));
    }
    println!("encrypted {} -> {}", c.input.display(), c.out.display());
    println!(
        "wrapped data key -> {} ({} KEK)",
        key_out.display(),
        wrapped.kind().as_str()
    );
    println!(
        "key id {}, {} bytes, sha256 {}",
        c.key_id,
        info.len,
        hex::encode(info.sha256)
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect_cmd(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let header =
        Header::read_from(&mut file).with_context(|| format!("reading {}", path.display()))?;
    let actual = file.metadata()?.len();
    let expected = header.container_len();
    let length = match actual.cmp(&expected) {
        std::cmp::Ordering::Equal => "ok",
        std::cmp::Ordering::Less => "truncated",
        std::cmp::Ordering::Greater => "trailing-data",
    };
    let key_path = key_path_for(path);
    let wrapped = WrappedKey::read_file(&key_path).ok();
    if json {
        let v = serde_json::json!({
            "file": path.display().to_string(),
            "version": confidant_keys::VERSION,
            "key_id": header.key_id().as_str(),
            "format": header.format().as_str(),
            "name": header.name(),
            "license": header.license(),
            "plaintext_len": header.plaintext_len(),
            "plaintext_sha256": hex::encode(header.plaintext_sha256()),
            "chunk_size": header.chunk_size(),
            "chunk_count": header.chunk_count(),
            "nonce_prefix": hex::encode(header.nonce_prefix()),
            "header_len": header.len(),
            "container_len": expected,
            "file_len": actual,
            "length": length,
            "wrapped_key": wrapped.as_ref().map(|w| serde_json::json!({
                "file": key_path.display().to_string(),
                "kek_kind": w.kind().as_str(),
                "kek_id": hex::encode(w.kek_id()),
                "key_id": w.key_id().as_str(),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("container      {}", path.display());
        println!("version        {}", confidant_keys::VERSION);
        println!("key id         {}", header.key_id());
        println!("format         {}", header.format());
        println!("name           {}", header.name());
        println!("license        {}", header.license());
        println!("plaintext      {} bytes", header.plaintext_len());
        println!("sha256         {}", hex::encode(header.plaintext_sha256()));
        println!(
            "chunks         {} of {} bytes",
            header.chunk_count(),
            header.chunk_size()
        );
        println!("nonce prefix   {}", hex::encode(header.nonce_prefix()));
        println!(
            "header         {} bytes (not authenticated: inspect does not use the key)",
            header.len()
        );
        println!("length         {length} ({actual} of {expected} bytes)");
        if let Some(w) = &wrapped {
            println!(
                "wrapped key    {} ({} KEK {}, key id {})",
                key_path.display(),
                w.kind().as_str(),
                hex::encode(w.kek_id()),
                w.key_id()
            );
        }
    }
    Ok(if length == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn decrypt_cmd(
    input: &Path,
    out: &Path,
    kek: &KekRef,
    wrapped_path: &Path,
) -> anyhow::Result<ExitCode> {
    refuse_existing(out)?;
    let mut file = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let header =
        Header::read_from(&mut file).with_context(|| format!("reading {}", input.display()))?;
    let wrapped = WrappedKey::read_file(wrapped_path)
        .with_context(|| format!("reading {}", wrapped_path.display()))?;
    let kek = kek.open().with_context(|| format!("opening KEK {kek}"))?;
    let key = unwrap_for_container(kek.as_ref(), &wrapped, &header)?;
    let decryptor =
        Decryptor::new(header, &key).with_context(|| format!("checking {}", input.display()))?;
    drop(key);

    // Dropping `tmp` on any error path below deletes the partial output.
    let tmp = temp_beside(out)?;
    let pb = progress(decryptor.header().container_len(), "decrypting");
    let verified = {
        let reader = pb.wrap_read(BufReader::with_capacity(1 << 20, &mut file));
        let mut writer = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let v = decryptor
            .decrypt_stream(reader, &mut writer)
            .with_context(|| format!("decrypting {}", input.display()))?;
        writer.flush()?;
        v
    };
    pb.finish_and_clear();
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(out)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "decrypted and verified {} -> {} ({} bytes, sha256 {})",
        input.display(),
        out.display(),
        verified.len(),
        hex::encode(verified.sha256())
    );
    Ok(ExitCode::SUCCESS)
}
