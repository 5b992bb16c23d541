//! A chat model's chat template (`tokenizer.chat_template`, Jinja, as the
//! Hugging Face tokenizer applies it), rendered with minijinja; ChatML when
//! the file has none.
//!
//! Messages' contents go into the template as placeholders, so that the
//! prompt's tokens can be made from the template's text (control tokens
//! recognised) and from the contents (taken as plain text) apart.

use minijinja::value::{from_args, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

use crate::answer::ChatMessage;

/// ChatML, for a file without a template (SmolLM2's and Qwen2's format).
pub(super) const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + \
                                 message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if \
                                 add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Marks a message's content in the rendered template: OPEN, its index, CLOSE
/// (private-use characters, removed from contents beforehand).
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// A piece of a rendered prompt.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Part<'a> {
    /// The template's own text: control tokens' text is control tokens.
    Template(&'a str),
    /// A message's content: plain text.
    Content(&'a str),
}

pub(super) struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    pub fn new(source: &str, bos: String, eos: String) -> Result<ChatTemplate, String> {
        let mut env = Environment::new();
        // As transformers' apply_chat_template renders.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(python_method);
        env.add_function("raise_exception", |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_function("strftime_now", |format: String| -> Result<String, Error> {
            use std::fmt::Write as _;
            let mut out = String::new();
            write!(out, "{}", chrono::Local::now().format(&format))
                .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("bad time format {format:?}")))?;
            Ok(out)
        });
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| format!("its chat template does not parse: {e}"))?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// The template rendered for `messages`, each content a placeholder,
    /// with the assistant's turn begun; see [`parts`].
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, String> {
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| minijinja::context! { role => m.role.as_str(), content => format!("{OPEN}{i}{CLOSE}") })
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        };
        let template = self.env.get_template("chat").map_err(|e| e.to_string())?;
        template.render(ctx).map_err(|e| format!("its chat template failed: {e}"))
    }
}

/// A message's content as it goes into a prompt: without the characters that
/// mark contents in the rendered template.
pub(super) fn clean(content: &str) -> std::borrow::Cow<'_, str> {
    if content.contains([OPEN, CLOSE]) {
        content.replace([OPEN, CLOSE], "").into()
    } else {
        content.into()
    }
}

/// A rendered prompt cut into the template's text and the messages' contents
/// (`contents[i]` where the template put message `i`'s).
pub(super) fn parts<'a>(rendered: &'a str, contents: &'a [std::borrow::Cow<'a, str>]) -> Vec<Part<'a>> {
    let mut out = Vec::new();
    let mut rest = rendered;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len_utf8()..];
        let index = after.find(CLOSE).and_then(|end| Some((after[..end].parse::<usize>().ok()?, end)));
        match index {
            Some((i, end)) if i < contents.len() => {
                if start > 0 {
                    out.push(Part::Template(&rest[..start]));
                }
                out.push(Part::Content(&contents[i]));
                rest = &after[end + CLOSE.len_utf8()..];
            }
            // A marker the template changed: its text, without the marker.
            _ => {
                if start > 0 {
                    out.push(Part::Template(&rest[..start]));
                }
                rest = after;
            }
        }
    }
    if !rest.is_empty() {
        out.push(Part::Template(rest));
    }
    out
}

/// The Python methods chat templates call on strings and dicts
/// (`.strip()`, `.startswith()`, `.items()`, ...), which Jinja2 has through
/// Python and minijinja does not.
fn python_method(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        let chars = |args: &[Value]| -> Result<Option<String>, Error> {
            let (chars,): (Option<String>,) = from_args(args)?;
            Ok(chars)
        };
        let trim = |chars: &Option<String>, c: char| match chars {
            Some(set) => set.contains(c),
            None => c.is_whitespace(),
        };
        return Ok(match method {
            "strip" => {
                let set = chars(args)?;
                Value::from(s.trim_matches(|c| trim(&set, c)))
            }
            "lstrip" => {
                let set = chars(args)?;
                Value::from(s.trim_start_matches(|c| trim(&set, c)))
            }
            "rstrip" => {
                let set = chars(args)?;
                Value::from(s.trim_end_matches(|c| trim(&set, c)))
            }
            "startswith" | "endswith" => {
                let (prefixes,): (Value,) = from_args(args)?;
                let test = |p: &str| if method == "startswith" { s.starts_with(p) } else { s.ends_with(p) };
                let hit = match prefixes.as_str() {
                    Some(p) => test(p),
                    None => prefixes.try_iter()?.any(|p| p.as_str().is_some_and(test)),
                };
                Value::from(hit)
            }
            "upper" => Value::from(s.to_uppercase()),
            "lower" => Value::from(s.to_lowercase()),
            "replace" => {
                let (old, new): (String, String) = from_args(args)?;
                Value::from(s.replace(&old, &new))
            }
            "split" => {
                let (sep, max): (Option<String>, Option<i64>) = from_args(args)?;
                let max = max.filter(|&m| m >= 0).map(|m| m as usize + 1).unwrap_or(usize::MAX);
                let parts: Vec<Value> = match sep {
                    Some(sep) if !sep.is_empty() => s.splitn(max, sep.as_str()).map(Value::from).collect(),
                    _ => s.split_whitespace().map(Value::from).collect(),
                };
                Value::from(parts)
            }
            "find" => {
                let (needle,): (String,) = from_args(args)?;
                Value::from(s.find(&needle).map(|i| s[..i].chars().count() as i64).unwrap_or(-1))
            }
            "count" => {
                let (needle,): (String,) = from_args(args)?;
                Value::from(s.matches(&needle).count())
            }
            "title" | "capitalize" => state.apply_filter(method, std::slice::from_ref(value))?,
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        });
    }
    if value.kind() == ValueKind::Map {
        return match method {
            "items" => state.apply_filter("items", std::slice::from_ref(value)),
            "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            "values" => {
                let keys: Vec<Value> = value.try_iter()?.collect();
                Ok(Value::from(keys.iter().map(|k| value.get_item(k).unwrap_or_default()).collect::<Vec<_>>()))
            }
            "get" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                match value.get_item(&key) {
                    Ok(v) if !v.is_undefined() => Ok(v),
                    _ => Ok(default.unwrap_or(Value::from(()))),
                }
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        };
    }
    Err(Error::from(ErrorKind::UnknownMethod))
}
