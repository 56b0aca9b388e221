//! One OpenAI-compatible chat client, used by the HTTP backend and by the LLM judge:
//! `POST {base}/v1/chat/completions` with timeouts and retries with exponential backoff on
//! 429, 5xx and connection errors. The API key comes from an environment variable and is
//! sent only to the endpoint it was configured for; a model name the server does not serve
//! is reported with the names it does.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tunelab::{GenerationConfig, Message};

use crate::error::{Error, Result};
use crate::excerpt::truncate;

/// Connection settings for an OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Base URL, with or without the trailing `/v1`.
    pub endpoint: String,
    /// The served model's name.
    pub model: String,
    /// Environment variable holding the API key (sent as a Bearer token when set).
    pub api_key_env: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per request (first try included).
    pub attempts: u32,
    /// First backoff delay; doubled after each retry (a `Retry-After` header wins).
    pub backoff: Duration,
    /// Largest response body read, in bytes; a longer one is an error, never read whole.
    pub max_body_bytes: u64,
}

/// The default [`HttpConfig::max_body_bytes`]: 16 MiB, far above any chat completion.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 << 20;

impl HttpConfig {
    /// Defaults: 4 in flight, 120 s timeout, 5 attempts, 0.5 s first backoff.
    pub fn new(endpoint: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            model: model.into(),
            api_key_env: None,
            concurrency: 4,
            timeout: Duration::from_secs(120),
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// A chat-completions client.
pub struct ChatClient {
    client: reqwest::blocking::Client,
    /// Base URL without `/v1`, as requests use it (with any `user:password@`).
    request_base: String,
    /// Base URL without `/v1` and without credentials: what messages and records show.
    pub base: String,
    api_key: Option<String>,
    /// Settings it was built with.
    pub config: HttpConfig,
}

/// A chat completion's text and usage.
#[derive(Debug, Clone)]
pub struct ChatReply {
    /// The assistant message.
    pub text: String,
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<usize>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<usize>,
    /// `usage.prompt_tokens_details.cached_tokens`: prompt tokens the server took from its
    /// prefix cache (OpenAI, vLLM with `--enable-prompt-tokens-details`, llama.cpp's server).
    pub cached_prompt_tokens: Option<usize>,
    /// `finish_reason`.
    pub finish: String,
}

impl ChatReply {
    /// Reads a chat completion body that `url` answered.
    fn from_body(reply: &Value, url: &str) -> Result<Self> {
        let choice = &reply["choices"][0];
        let text = choice["message"]["content"].as_str().ok_or_else(|| Error::Endpoint {
            url: url.to_string(),
            message: format!("answered without choices[0].message.content: {}", short_body(&reply.to_string())),
        })?;
        let count = |v: &Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
        let usage = &reply["usage"];
        Ok(Self {
            text: text.to_string(),
            prompt_tokens: count(&usage["prompt_tokens"]),
            completion_tokens: count(&usage["completion_tokens"]),
            cached_prompt_tokens: count(&usage["prompt_tokens_details"]["cached_tokens"]),
            finish: choice["finish_reason"].as_str().unwrap_or("").to_string(),
        })
    }
}

impl ChatClient {
    /// Builds a client; reads the API key variable (an error if it is named but unset).
    pub fn new(config: HttpConfig) -> Result<Self> {
        let api_key = match &config.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| Error::Invalid(format!("the API key variable {var} is not set")))?),
            None => None,
        };
        let base = base_url(&config.endpoint);
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Invalid(format!("endpoint {:?} must start with http:// or https://", config.endpoint)));
        }
        if config.timeout.is_zero() {
            return Err(Error::Invalid("the request timeout is 0 seconds; every request would fail".into()));
        }
        // Redirects are not followed: a redirect would carry outputs (and a judge's prompt) to
        // an address the user never named or allowed, while the run records the one named.
        let client = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Endpoint { url: base.clone(), message: format!("cannot build an HTTP client: {e}") })?;
        Ok(Self { client, base: without_credentials(&base), request_base: base, api_key, config })
    }

    fn request(&self, builder: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// The model names the endpoint serves (`GET /v1/models`).
    pub fn models(&self) -> Result<Vec<String>> {
        let body: Value = self.with_retries("/v1/models", |url| self.request(self.client.get(url)))?;
        Ok(body["data"].as_array().map(|d| d.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect()).unwrap_or_default())
    }

    /// Fails with the served names when the configured model is not among them.
    pub fn check_model(&self) -> Result<()> {
        let served = self.models()?;
        if !served.is_empty() && !served.contains(&self.config.model) {
            let listed: Vec<String> = served.iter().take(SERVED_NAMES_LISTED).map(|n| printable(&truncate(n, 100))).collect();
            let more = served.len().saturating_sub(SERVED_NAMES_LISTED);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            let message = format!("does not serve a model named {:?}; it serves: {}{more}", self.config.model, listed.join(", "));
            return Err(Error::Endpoint { url: self.base.clone(), message });
        }
        Ok(())
    }

    /// One chat completion.
    pub fn chat(&self, messages: &[Message], decoding: &GenerationConfig) -> Result<ChatReply> {
        let path = "/v1/chat/completions";
        let msgs: Vec<Value> = messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect();
        let mut body = json!({
            "model": self.config.model,
            "messages": msgs,
            "max_tokens": decoding.max_new_tokens,
            "temperature": decoding.temperature,
            "seed": decoding.seed,
            "stream": false,
        });
        if let Some(p) = decoding.top_p {
            body["top_p"] = json!(p);
        }
        if let Some(k) = decoding.top_k {
            body["top_k"] = json!(k);
        }
        if !decoding.stop_strings.is_empty() {
            body["stop"] = json!(decoding.stop_strings);
        }
        let reply: Value = self.with_retries(path, |url| self.request(self.client.post(url).json(&body)))?;
        ChatReply::from_body(&reply, &format!("{}{path}", self.base))
    }

    /// Sends a request, retrying on 429, 5xx and connection errors with backoff; other
    /// statuses fail at once with the server's message.
    fn with_retries(&self, path: &str, make: impl Fn(&str) -> reqwest::blocking::RequestBuilder) -> Result<Value> {
        let request_url = format!("{}{path}", self.request_base);
        let url = format!("{}{path}", self.base);
        let fail = |message: String| Error::Endpoint { url: url.clone(), message };
        let mut delay = self.config.backoff;
        let mut last = String::new();
        for attempt in 1..=self.config.attempts.max(1) {
            let deadline = Instant::now() + self.config.timeout;
            match make(&request_url).send() {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
                    if status.is_redirection() {
                        let to = resp
                            .headers()
                            .get("location")
                            .and_then(|v| v.to_str().ok())
                            .map_or_else(String::new, |l| format!(" to {}", printable(&truncate(l, 200))));
                        return Err(fail(format!("answered {status} (a redirect{to}); redirects are not followed: name the final address")));
                    }
                    let text = match read_body(resp, self.config.max_body_bytes, deadline) {
                        Ok(Some(text)) => text,
                        Ok(None) => {
                            return Err(fail(format!(
                            "answered {status} with a body longer than {} MiB; raise the limit with --max-response-mb if this server's replies are that large",
                            self.config.max_body_bytes.div_ceil(1 << 20)
                        )))
                        }
                        // A body cut off (timeout, dropped connection) is retried like a
                        // failed request, not read as an empty answer.
                        Err(e) => {
                            last = format!("{status}, but the body was cut off ({e})");
                            self.wait_before_retry(attempt, &mut delay);
                            continue;
                        }
                    };
                    if status.is_success() {
                        return serde_json::from_str(&text).map_err(|_| fail(format!("answered {status} with a body that is not JSON: {}", short_body(&text))));
                    }
                    if status.as_u16() == 404 && text.to_lowercase().contains("model") {
                        return Err(fail(format!("the server does not know the model {:?} ({status}: {})", self.config.model, short_body(&text))));
                    }
                    if status.as_u16() != 429 && !status.is_server_error() {
                        return Err(fail(format!("answered {status}: {}", short_body(&text))));
                    }
                    last = format!("{status}: {}", short_body(&text));
                    if let Some(wait) = retry_after {
                        delay = wait;
                    }
                }
                Err(e) if e.is_timeout() => last = format!("timed out after {:?}", self.config.timeout),
                Err(e) if e.is_connect() || e.is_request() => last = format!("cannot connect ({e})"),
                Err(e) => return Err(fail(e.to_string())),
            }
            self.wait_before_retry(attempt, &mut delay);
        }
        Err(fail(format!("gave up after {} attempts; last: {last}", self.config.attempts)))
    }

    /// Sleeps `delay` unless `attempt` was the last, then doubles it (up to [`MAX_BACKOFF`]).
    fn wait_before_retry(&self, attempt: u32, delay: &mut Duration) {
        if attempt < self.config.attempts {
            std::thread::sleep(*delay);
            *delay = (*delay * 2).min(MAX_BACKOFF);
        }
    }
}

/// The longest wait between two attempts, whatever the backoff or the server asks.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The body as text when it holds at most `limit` bytes (`None` past it, having read only
/// `limit + 1` bytes); an error when the connection fails mid-body or the body is still
/// arriving at `deadline` (the client's timeout bounds each read, not a body trickled a
/// byte at a time).
fn read_body(resp: reqwest::blocking::Response, limit: u64, deadline: Instant) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let (mut reader, mut bytes, mut chunk) = (resp.take(limit.saturating_add(1)), Vec::new(), [0u8; 16 << 10]);
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        if Instant::now() > deadline {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the reply was still arriving when the request timed out"));
        }
    }
    if bytes.len() as u64 > limit {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Served model names listed when the configured one is missing.
const SERVED_NAMES_LISTED: usize = 20;

/// `text` with control characters (terminal escape sequences in a hostile reply) written
/// as escapes, so a message never drives the terminal that shows it.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\n' { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// An endpoint's base URL: without a trailing `/` or `/v1` (requests add `/v1/…`).
pub fn base_url(endpoint: &str) -> String {
    endpoint.trim_end_matches('/').trim_end_matches("/v1").to_string()
}

/// `url` without a `user:password@` part (kept out of messages and run records).
pub fn without_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let authority_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end], &url[scheme_end + at + 1..]),
        None => url.to_string(),
    }
}

/// A `Retry-After` header's wait in seconds, within 0–[`MAX_BACKOFF`]; `None` when absent or
/// not a finite number (HTTP dates are not honoured: the backoff applies).
fn retry_after(header: Option<&str>) -> Option<Duration> {
    let secs = header?.trim().parse::<f64>().ok().filter(|s| s.is_finite())?;
    Some(Duration::from_secs_f64(secs.clamp(0.0, MAX_BACKOFF.as_secs_f64())))
}

fn short_body(text: &str) -> String {
    printable(&truncate(text.trim(), 300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_kept_out_of_shown_urls() {
        assert_eq!(without_credentials("http://user:pw@host:8000/v1"), "http://host:8000/v1");
        assert_eq!(without_credentials("https://host/a@b"), "https://host/a@b");
        assert_eq!(without_credentials("http://host:1"), "http://host:1");
        let mut config = HttpConfig::new("http://me:secret@127.0.0.1:9/v1", "m");
        config.attempts = 1;
        let client = ChatClient::new(config).unwrap();
        assert_eq!(client.base, "http://127.0.0.1:9");
        let err = client.models().unwrap_err().to_string();
        assert!(!err.contains("secret") && err.contains("127.0.0.1:9"), "{err}");
    }

    /// Replies as vLLM (prefix caching with prompt token details on), OpenAI and
    /// llama-cpp-python's server send them; `cached_tokens` is read where present.
    #[test]
    fn usage_with_and_without_cached_prompt_tokens() {
        let vllm = json!({"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 210, "completion_tokens": 12, "total_tokens": 222, "prompt_tokens_details": {"cached_tokens": 192}}});
        let r = ChatReply::from_body(&vllm, "u").unwrap();
        assert_eq!((r.text.as_str(), r.prompt_tokens, r.completion_tokens, r.cached_prompt_tokens), ("hi", Some(210), Some(12), Some(192)));
        assert_eq!(r.finish, "stop");
        let plain = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "prompt_tokens_details": null}});
        let r = ChatReply::from_body(&plain, "u").unwrap();
        assert_eq!((r.prompt_tokens, r.cached_prompt_tokens), (Some(5), None));
        let hostile = json!({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": -1, "prompt_tokens_details": {"cached_tokens": "many"}}});
        let r = ChatReply::from_body(&hostile, "u").unwrap();
        assert_eq!((r.prompt_tokens, r.cached_prompt_tokens, r.finish.as_str()), (None, None, ""));
        let e = ChatReply::from_body(&json!({"choices": []}), "http://h/v1/chat/completions").unwrap_err().to_string();
        assert!(e.contains("http://h/v1/chat/completions") && e.contains("choices[0].message.content"), "{e}");
    }

    /// Terminal escape sequences in a server's text are shown as escapes, not obeyed.
    #[test]
    fn server_text_in_messages_is_printable() {
        assert_eq!(printable("a\u{1b}]0;pwned\u{7}\u{1b}[2Jb\nc"), "a\\u{1b}]0;pwned\\u{7}\\u{1b}[2Jb\nc");
        assert_eq!(short_body("  \u{1b}[31mred\u{1b}[0m  "), "\\u{1b}[31mred\\u{1b}[0m");
    }

    #[test]
    fn retry_after_is_bounded_and_never_panics() {
        assert_eq!(retry_after(Some("5")), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(Some("-3")), Some(Duration::ZERO));
        assert_eq!(retry_after(Some("1e309")), None);
        assert_eq!(retry_after(Some("1e12")), Some(MAX_BACKOFF));
        assert_eq!(retry_after(Some("NaN")), None);
        assert_eq!(retry_after(Some("inf")), None);
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }
}
