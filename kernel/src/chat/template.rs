//! Chat templates rendered with minijinja, following HF `apply_chat_template` conventions:
//! the template sees `messages` (each `{role, content}`), `add_generation_prompt`,
//! `bos_token`, `eos_token` and may call `raise_exception(msg)`. Python string methods
//! (`.strip()`, `.startswith()`, …) work through minijinja-contrib's pycompat layer.
//!
//! Besides a model's own template there are named fallbacks equal to LLaMA-Factory's
//! `default`, `qwen`, `llama3` and `chatml` templates.

use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who speaks in a chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the whole conversation.
    System,
    /// The human turn.
    User,
    /// The model's turn.
    Assistant,
}

impl Role {
    /// The role's name as chat templates expect it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Text of the turn.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: Role::System, content: content.into() }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: Role::User, content: content.into() }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: Role::Assistant, content: content.into() }
    }
}

/// LLaMA-Factory's `default` template.
const DEFAULT_TEMPLATE: &str = "{% for m in messages %}\
{% if m.role == 'system' %}System: {{ m.content }}{{ eos_token }}\n\
{% elif m.role == 'user' %}Human: {{ m.content }}{{ eos_token }}\nAssistant:\
{% elif m.role == 'assistant' %}{{ m.content }}{{ eos_token }}\n{% endif %}\
{% endfor %}";

/// ChatML as LLaMA-Factory's `chatml` writes it (no default system prompt).
const CHATML_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// LLaMA-Factory's `qwen`: ChatML with Qwen's default system prompt.
const QWEN_TEMPLATE: &str = "{% if messages[0].role != 'system' %}<|im_start|>system\n\
You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n{% endif %}\
{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// LLaMA-Factory's `llama3`.
const LLAMA3_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}\
<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}\
{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

/// A compiled chat template with the special tokens it refers to.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("source", &self.source).finish()
    }
}

impl Clone for ChatTemplate {
    fn clone(&self) -> Self {
        Self::new(&self.source, &self.bos_token, &self.eos_token).expect("a compiled template compiles again")
    }
}

/// Instructions a template may run per rendering (real chat templates, tool loops
/// included, take a few thousand).
const TEMPLATE_FUEL: u64 = 10_000_000;

impl ChatTemplate {
    /// Compiles a Jinja chat template; a syntax error names the template's line.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        // HF renders with jinja2's trim_blocks and lstrip_blocks on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Templates come with model files: one that loops without end is stopped, not run.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |_fmt: String| -> String {
            // Templates use it for "today's date" lines; a fixed value keeps prompts reproducible.
            "26 Jul 2024".to_string()
        });
        env.add_template_owned("chat", source.to_string()).map_err(template_error)?;
        Ok(Self { env, source: source.to_string(), bos_token: bos_token.into(), eos_token: eos_token.into() })
    }

    /// One of the named fallback templates: `default`, `chatml`, `qwen`, `llama3`.
    pub fn named(name: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let source = match name {
            "default" => DEFAULT_TEMPLATE,
            "chatml" => CHATML_TEMPLATE,
            "qwen" => QWEN_TEMPLATE,
            "llama3" => LLAMA3_TEMPLATE,
            other => return Err(Error::Template { line: None, message: format!("unknown template name {other:?} (known: default, chatml, qwen, llama3)") }),
        };
        Self::new(source, bos_token, eos_token)
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(template_error)?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(template_error)
    }

    /// The prompt for a single user turn with an optional system message.
    pub fn render_prompt(&self, system: Option<&str>, user: &str) -> Result<String> {
        let mut messages = Vec::with_capacity(2);
        if let Some(s) = system {
            messages.push(Message::system(s));
        }
        messages.push(Message::user(user));
        self.render(&messages, true)
    }
}

fn template_error(e: minijinja::Error) -> Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::Template { line: e.line(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_templates_render_like_llama_factory() {
        let msgs = [Message::system("Be brief."), Message::user("Hi"), Message::assistant("Hello!"), Message::user("Bye")];
        let d = ChatTemplate::named("default", "<s>", "</s>").unwrap();
        assert_eq!(d.render(&msgs, true).unwrap(), "System: Be brief.</s>\nHuman: Hi</s>\nAssistant:Hello!</s>\nHuman: Bye</s>\nAssistant:");
        let q = ChatTemplate::named("qwen", "", "<|im_end|>").unwrap();
        assert_eq!(
            q.render(&[Message::user("Hi")], true).unwrap(),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let l = ChatTemplate::named("llama3", "<|begin_of_text|>", "<|eot_id|>").unwrap();
        assert_eq!(
            l.render(&[Message::user("Hi")], true).unwrap(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn broken_template_names_its_line() {
        let err = ChatTemplate::new("line one\n{% for m in messages %}\n{{ m.content }\n{% endfor %}", "", "").unwrap_err();
        match err {
            Error::Template { line, .. } => assert_eq!(line, Some(3)),
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn raise_exception_surfaces_the_message() {
        let t = ChatTemplate::new("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}", "", "").unwrap();
        let err = t.render(&[Message::system("x")], false).unwrap_err().to_string();
        assert!(err.contains("first must be user"), "{err}");
    }

    #[test]
    fn user_text_is_not_evaluated_as_jinja() {
        let t = ChatTemplate::named("chatml", "", "").unwrap();
        let out = t.render(&[Message::user("{{ 1+1 }} <b>x</b>")], false).unwrap();
        assert_eq!(out, "<|im_start|>user\n{{ 1+1 }} <b>x</b><|im_end|>\n");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new("{{ messages[0].content.strip() }}|{{ messages[0].content.startswith(' a') }}", "", "").unwrap();
        assert_eq!(t.render(&[Message::user(" a b ")], false).unwrap(), "a b|True");
    }

    /// A template from a model file that loops without end is stopped with an error (out of
    /// fuel), not left running; the shipped templates render well within the budget.
    #[test]
    fn a_template_that_never_ends_is_stopped() {
        let t = ChatTemplate::new("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "", "").unwrap();
        let err = t.render(&[Message::user("x")], false).unwrap_err().to_string();
        assert!(err.contains("fuel"), "{err}");
    }
}
