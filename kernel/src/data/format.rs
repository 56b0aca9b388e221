//! Record formats and their column names, after LLaMA-Factory's `dataset_info.json`
//! (`formatting`, `columns`, `tags`): converting one JSON object into an [`Example`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::example::{Example, SourceRef};
use crate::chat::{Message, Role};

/// How records are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    /// Decide per record: `messages` → OpenAI, `conversations` → ShareGPT, else Alpaca.
    #[default]
    Auto,
    /// `instruction`, `input`, `output`, optional `system` and `history`.
    Alpaca,
    /// `conversations` of `{from, value}` turns.
    ShareGpt,
    /// `messages` of `{role, content}` turns.
    OpenAi,
}

impl std::str::FromStr for DatasetFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "alpaca" => Ok(Self::Alpaca),
            "sharegpt" => Ok(Self::ShareGpt),
            "openai" | "messages" => Ok(Self::OpenAi),
            other => Err(format!("unknown dataset format {other:?} (auto, alpaca, sharegpt, openai)")),
        }
    }
}

/// Column and tag names, with LLaMA-Factory's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Columns {
    /// Alpaca instruction column.
    pub prompt: String,
    /// Alpaca input column (appended to the instruction after a newline).
    pub query: String,
    /// Alpaca output column.
    pub response: String,
    /// Alpaca history column: a list of `[user, assistant]` pairs.
    pub history: String,
    /// System prompt column.
    pub system: String,
    /// ShareGPT / OpenAI conversation column (`conversations` / `messages` by default).
    pub messages: Option<String>,
    /// Key of a turn's role.
    pub role_tag: Option<String>,
    /// Key of a turn's text.
    pub content_tag: Option<String>,
    /// Role value of user turns.
    pub user_tag: Option<String>,
    /// Role value of assistant turns.
    pub assistant_tag: Option<String>,
    /// Role value of system turns.
    pub system_tag: Option<String>,
    /// Optional record id column.
    pub id: String,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            prompt: "instruction".into(),
            query: "input".into(),
            response: "output".into(),
            history: "history".into(),
            system: "system".into(),
            messages: None,
            role_tag: None,
            content_tag: None,
            user_tag: None,
            assistant_tag: None,
            system_tag: None,
            id: "id".into(),
        }
    }
}

/// How to read a dataset file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadOptions {
    /// Record format.
    pub format: DatasetFormat,
    /// Column names.
    pub columns: Columns,
    /// Prompts only: a record needs no response (its conversation may end with the user's
    /// turn), as for prompts a model is about to answer (`tunelab data replay`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompts_only: bool,
}

/// A record-level problem: the field it concerns (if any) and what is wrong.
pub(crate) type FieldError = (Option<String>, String);

impl LoadOptions {
    /// Converts one record into an example, or says which field is wrong.
    pub(crate) fn convert(&self, obj: &Map<String, Value>, source: SourceRef) -> Result<Example, FieldError> {
        let c = &self.columns;
        let conv_key = |default: &str| c.messages.clone().unwrap_or_else(|| default.to_string());
        let format = match self.format {
            DatasetFormat::Auto if obj.contains_key(&conv_key("messages")) => DatasetFormat::OpenAi,
            DatasetFormat::Auto if obj.contains_key(&conv_key("conversations")) => DatasetFormat::ShareGpt,
            DatasetFormat::Auto => DatasetFormat::Alpaca,
            f => f,
        };
        let messages = match format {
            DatasetFormat::Alpaca | DatasetFormat::Auto => self.alpaca(obj)?,
            DatasetFormat::ShareGpt => {
                let tags = TurnTags {
                    role: c.role_tag.as_deref().unwrap_or("from"),
                    content: c.content_tag.as_deref().unwrap_or("value"),
                    user: c.user_tag.as_deref().unwrap_or("human"),
                    assistant: c.assistant_tag.as_deref().unwrap_or("gpt"),
                    system: c.system_tag.as_deref().unwrap_or("system"),
                };
                self.turns(obj, &conv_key("conversations"), &tags)?
            }
            DatasetFormat::OpenAi => {
                let tags = TurnTags {
                    role: c.role_tag.as_deref().unwrap_or("role"),
                    content: c.content_tag.as_deref().unwrap_or("content"),
                    user: c.user_tag.as_deref().unwrap_or("user"),
                    assistant: c.assistant_tag.as_deref().unwrap_or("assistant"),
                    system: c.system_tag.as_deref().unwrap_or("system"),
                };
                self.turns(obj, &conv_key("messages"), &tags)?
            }
        };
        check_order(&messages, self.prompts_only)?;
        let id = match obj.get(&c.id) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Ok(Example { source, messages, id, record: obj.clone() })
    }

    fn alpaca(&self, obj: &Map<String, Value>) -> Result<Vec<Message>, FieldError> {
        let c = &self.columns;
        let instruction = string_field(obj, &c.prompt, false)?;
        let input = string_field(obj, &c.query, true)?;
        let output = string_field(obj, &c.response, self.prompts_only)?;
        let system = string_field(obj, &c.system, true)?;
        if instruction.trim().is_empty() && input.trim().is_empty() {
            return Err((Some(c.prompt.clone()), format!("is empty (and {} too): the example has no prompt", c.query)));
        }
        if output.trim().is_empty() && !self.prompts_only {
            return Err((Some(c.response.clone()), "is empty: the example has no response to learn".into()));
        }
        let mut messages = Vec::new();
        if !system.trim().is_empty() {
            messages.push(Message::system(system));
        }
        match obj.get(&c.history) {
            None | Some(Value::Null) => {}
            Some(Value::Array(pairs)) => {
                for (i, pair) in pairs.iter().enumerate() {
                    let field = || Some(format!("{}[{i}]", c.history));
                    let pair = pair.as_array().filter(|p| p.len() == 2).ok_or_else(|| (field(), "expected a [user, assistant] pair".to_string()))?;
                    let (Some(u), Some(a)) = (pair[0].as_str(), pair[1].as_str()) else {
                        return Err((field(), "history turns must be strings".into()));
                    };
                    messages.push(Message::user(u));
                    messages.push(Message::assistant(a));
                }
            }
            Some(_) => return Err((Some(c.history.clone()), "expected a list of [user, assistant] pairs".into())),
        }
        // LLaMA-Factory joins instruction and input with a newline.
        let user = if input.is_empty() {
            instruction
        } else if instruction.is_empty() {
            input
        } else {
            format!("{instruction}\n{input}")
        };
        messages.push(Message::user(user));
        if !output.trim().is_empty() {
            messages.push(Message::assistant(output));
        }
        Ok(messages)
    }

    fn turns(&self, obj: &Map<String, Value>, key: &str, tags: &TurnTags) -> Result<Vec<Message>, FieldError> {
        let turns = match obj.get(key) {
            Some(Value::Array(t)) => t,
            Some(_) => return Err((Some(key.into()), "expected a list of turns".into())),
            None => return Err((Some(key.into()), "missing field".into())),
        };
        let mut messages = Vec::with_capacity(turns.len());
        for (i, turn) in turns.iter().enumerate() {
            let field = |f: &str| Some(format!("{key}[{i}].{f}"));
            let turn = turn.as_object().ok_or_else(|| (Some(format!("{key}[{i}]")), "expected an object".to_string()))?;
            let role = match turn.get(tags.role) {
                Some(Value::String(r)) => r.as_str(),
                Some(_) => return Err((field(tags.role), "expected a string".into())),
                None => return Err((field(tags.role), "missing field".into())),
            };
            let content = match turn.get(tags.content) {
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err((field(tags.content), "expected a string".into())),
                None => return Err((field(tags.content), "missing field".into())),
            };
            let role = if role == tags.user {
                Role::User
            } else if role == tags.assistant {
                Role::Assistant
            } else if role == tags.system {
                Role::System
            } else {
                return Err((field(tags.role), format!("unknown role {role:?} (expected {:?}, {:?} or {:?})", tags.user, tags.assistant, tags.system)));
            };
            messages.push(Message { role, content });
        }
        Ok(messages)
    }
}

struct TurnTags<'a> {
    role: &'a str,
    content: &'a str,
    user: &'a str,
    assistant: &'a str,
    system: &'a str,
}

/// A string field; `optional` fields may be absent or null (read as empty).
fn string_field(obj: &Map<String, Value>, key: &str, optional: bool) -> Result<String, FieldError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) if optional => Ok(String::new()),
        None => Err((Some(key.into()), "missing field".into())),
        Some(Value::Null) => Err((Some(key.into()), "is null, expected a string".into())),
        Some(other) => Err((Some(key.into()), format!("expected a string, found {}", kind(other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Optional system first, then user/assistant alternating from a user turn, ending with a
/// non-empty assistant turn; no turn empty.
fn check_order(messages: &[Message], prompts_only: bool) -> Result<(), FieldError> {
    let body = match messages.first() {
        Some(m) if m.role == Role::System => &messages[1..],
        _ => messages,
    };
    if body.is_empty() {
        return Err((None, "no user/assistant turns".into()));
    }
    for (i, m) in body.iter().enumerate() {
        let want = if i % 2 == 0 { Role::User } else { Role::Assistant };
        if m.role != want {
            return Err((
                None,
                format!("wrong role order: turn {} is {}, expected {} (system?, then user/assistant alternating)", i + 1, m.role.as_str(), want.as_str()),
            ));
        }
        if m.content.trim().is_empty() {
            return Err((None, format!("turn {} ({}) is empty", i + 1, m.role.as_str())));
        }
    }
    if body.len() % 2 != 0 && !prompts_only {
        return Err((None, "the conversation must end with an assistant turn".into()));
    }
    Ok(())
}
