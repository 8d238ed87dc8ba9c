//! Chat templates from GGUF metadata, rendered with minijinja.
//!
//! A model's `tokenizer.chat_template` is a Jinja template written for
//! Hugging Face `transformers`, which renders it with Jinja2 in a sandbox
//! with `trim_blocks` and `lstrip_blocks`. This module renders it the same
//! way, with the globals such templates use: `messages`, `bos_token`,
//! `eos_token`, `add_generation_prompt`, `raise_exception()`,
//! `strftime_now()`, the `tojson` filter and the common Python string and
//! dict methods (`.strip()`, `.startswith()`, `.items()`, ...).
//!
//! The template comes with the model file, so rendering is bounded: the
//! source size, the number of template instructions executed (minijinja
//! fuel) and the size of the output are all capped.

use std::io::Write;

use minijinja::value::Value;
use minijinja::{Environment, ErrorKind, State};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::tokenizer::Tokenizer;

const KEY_TEMPLATE: &str = "tokenizer.chat_template";
const NAME: &str = "chat_template";

/// Longest template source accepted, in bytes (real ones are under 20 KiB).
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;
/// Longest rendered prompt, in bytes.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;
/// Template instructions one render may execute. A real template spends a
/// few dozen per message.
pub const RENDER_FUEL: u64 = 20_000_000;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with this role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
///
/// ```
/// use confidant_inference::{ChatMessage, ChatTemplate};
///
/// let source = "{% for m in messages %}<|{{ m.role }}|>{{ m.content.strip() }}\n{% endfor %}\
///               {% if add_generation_prompt %}<|assistant|>{% endif %}";
/// let template = ChatTemplate::new(source, "<s>", "</s>")?;
/// let prompt = template.render(&[ChatMessage::new("user", " Hi! ")], true)?;
/// assert_eq!(prompt, "<|user|>Hi!\n<|assistant|>");
/// # Ok::<(), confidant_inference::Error>(())
/// ```
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Context<'a> {
    messages: &'a [ChatMessage],
    add_generation_prompt: bool,
    bos_token: &'a str,
    eos_token: &'a str,
}

impl ChatTemplate {
    /// The template in `tokenizer.chat_template`, `None` if the model has
    /// none. `bos_token` and `eos_token` are the texts of the tokenizer's
    /// BOS and EOS tokens (empty if it has none).
    pub fn from_gguf(gguf: &Gguf, tokenizer: &Tokenizer) -> Result<Option<Self>> {
        if gguf.get(KEY_TEMPLATE).is_none() {
            return Ok(None);
        }
        let source = gguf.str(KEY_TEMPLATE)?;
        let text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.id_to_token(i))
                .unwrap_or_default()
                .to_owned()
        };
        Self::new(source, &text(tokenizer.bos_id()), &text(tokenizer.eos_id())).map(Some)
    }

    /// Compiles `source`.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(Error::Template(format!(
                "the template is {} bytes long, more than the limit of {MAX_TEMPLATE_BYTES}",
                source.len()
            )));
        }
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(RENDER_FUEL));
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.set_unknown_method_callback(python_methods);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| template_error("does not compile", &e))?;
        Ok(Self {
            env,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        })
    }

    /// Renders a conversation. With `add_generation_prompt`, the prompt ends
    /// with the start of an assistant turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| template_error("is missing", &e))?;
        let ctx = Context {
            messages,
            add_generation_prompt,
            bos_token: &self.bos,
            eos_token: &self.eos,
        };
        let mut out = BoundedWriter::default();
        template
            .render_captured_to(ctx, &mut out)
            .map_err(|e| template_error("failed to render", &e))?;
        String::from_utf8(out.buf).map_err(|_| Error::Template("rendered text is not UTF-8".into()))
    }
}

fn template_error(what: &str, e: &minijinja::Error) -> Error {
    // Display of a minijinja error is its kind, detail and location; it does
    // not include the values being rendered.
    if e.kind() == ErrorKind::InvalidOperation
        && let Some(msg) = e.detail().and_then(|d| d.strip_prefix(RAISED))
    {
        return Error::Template(format!("the template raised an exception: {msg}"));
    }
    Error::Template(format!("{what}: {e}"))
}

/// Output capped at [`MAX_RENDERED_BYTES`].
#[derive(Default)]
struct BoundedWriter {
    buf: Vec<u8>,
}

impl Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other(format!(
                "rendered prompt exceeds {MAX_RENDERED_BYTES} bytes"
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const RAISED: &str = "raise_exception: ";

/// `raise_exception(message)`: templates call it to refuse a conversation
/// (for example roles that do not alternate).
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{message}"),
    ))
}

/// `strftime_now(format)`: the current UTC time, for templates that put the
/// date in the system prompt. Supports `%Y %y %m %d %e %B %b %A %a %H %M %S
/// %j %%`.
fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    strftime(&format, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

fn strftime(format: &str, unix_secs: u64) -> std::result::Result<String, minijinja::Error> {
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = ((days + 3) % 7) as usize;
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec = chars.next().unwrap_or('%');
        let piece = match spec {
            'Y' => year.to_string(),
            'y' => format!("{:02}", year % 100),
            'm' => format!("{month:02}"),
            'd' => format!("{day:02}"),
            'e' => format!("{day:>2}"),
            'B' => month_name.to_owned(),
            'b' => month_name[..3].to_owned(),
            'A' => WEEKDAYS[weekday].to_owned(),
            'a' => WEEKDAYS[weekday][..3].to_owned(),
            'H' => format!("{:02}", secs / 3600),
            'M' => format!("{:02}", secs / 60 % 60),
            'S' => format!("{:02}", secs % 60),
            'j' => format!("{day_of_year:03}"),
            '%' => "%".to_owned(),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: unsupported directive %{other}"),
                ));
            }
        };
        out.push_str(&piece);
    }
    Ok(out)
}

/// Howard Hinnant's `civil_from_days` for days since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`] (years from 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Python methods that Hugging Face templates call on strings and dicts.
fn python_methods(
    _state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    if let Some(s) = value.as_str() {
        return string_method(s, method, args);
    }
    if value.kind() == minijinja::value::ValueKind::Map {
        return map_method(value, method, args);
    }
    Err(minijinja::Error::from(ErrorKind::UnknownMethod))
}

fn str_arg(args: &[Value], i: usize) -> std::result::Result<Option<&str>, minijinja::Error> {
    match args.get(i) {
        None => Ok(None),
        Some(v) if v.is_none() || v.is_undefined() => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| {
            minijinja::Error::new(ErrorKind::InvalidOperation, "expected a string argument")
        }),
    }
}

fn string_method(
    s: &str,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    let chars = str_arg(args, 0)?;
    let trim_set = |c: char| chars.map_or(c.is_whitespace(), |set| set.contains(c));
    Ok(match method {
        "strip" => Value::from(s.trim_matches(trim_set)),
        "lstrip" => Value::from(s.trim_start_matches(trim_set)),
        "rstrip" => Value::from(s.trim_end_matches(trim_set)),
        "upper" => Value::from(s.to_uppercase()),
        "lower" => Value::from(s.to_lowercase()),
        "startswith" => Value::from(chars.is_some_and(|p| s.starts_with(p))),
        "endswith" => Value::from(chars.is_some_and(|p| s.ends_with(p))),
        "replace" => {
            let (Some(from), Some(to)) = (chars, str_arg(args, 1)?) else {
                return Err(minijinja::Error::new(
                    ErrorKind::MissingArgument,
                    "replace() takes two strings",
                ));
            };
            Value::from(s.replace(from, to))
        }
        "split" => {
            let max = args.get(1).and_then(|v| i64::try_from(v.clone()).ok());
            let parts: Vec<Value> = match (chars, max) {
                (None, _) => s.split_whitespace().map(Value::from).collect(),
                (Some(""), _) => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "split(): empty separator",
                    ));
                }
                (Some(sep), Some(n)) if n >= 0 => s
                    .splitn(
                        usize::try_from(n).unwrap_or(usize::MAX).saturating_add(1),
                        sep,
                    )
                    .map(Value::from)
                    .collect(),
                (Some(sep), _) => s.split(sep).map(Value::from).collect(),
            };
            Value::from(parts)
        }
        _ => return Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
    })
}

fn map_method(
    map: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    match method {
        "items" => {
            let mut items = Vec::new();
            for key in map.try_iter()? {
                let value = map.get_item(&key)?;
                items.push(Value::from(vec![key, value]));
            }
            Ok(Value::from(items))
        }
        "keys" => Ok(Value::from(map.try_iter()?.collect::<Vec<_>>())),
        "values" => {
            let mut values = Vec::new();
            for key in map.try_iter()? {
                values.push(map.get_item(&key)?);
            }
            Ok(Value::from(values))
        }
        "get" => {
            let Some(key) = args.first() else {
                return Err(minijinja::Error::from(ErrorKind::MissingArgument));
            };
            let value = map.get_item(key)?;
            Ok(if value.is_undefined() {
                args.get(1).cloned().unwrap_or(Value::from(()))
            } else {
                value
            })
        }
        _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
    }
}

#[cfg(test)]
mod tests;
