//! The OpenAI-compatible HTTP backend (vLLM, llama.cpp's server, Ollama, LLaMA-Factory's
//! API): cases sent through a [`ChatClient`] with bounded concurrency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use tunelab::GenerationConfig;

use super::{Backend, BackendInfo, Generated, OnGenerated};
use crate::case::Case;
use crate::chat::{ChatClient, HttpConfig};
use crate::error::Result;

/// Generation through a [`ChatClient`].
pub struct HttpBackend {
    client: ChatClient,
    info: BackendInfo,
}

impl HttpBackend {
    /// Connects and checks that the endpoint serves the model.
    pub fn connect(config: HttpConfig) -> Result<Self> {
        let client = ChatClient::new(config)?;
        client.check_model()?;
        let info = BackendInfo {
            kind: "http".into(),
            model: client.config.model.clone(),
            model_sha256: None,
            adapter: None,
            adapter_sha256: None,
            endpoint: Some(client.base.clone()),
            weights: None,
            device: None,
        };
        Ok(Self { client, info })
    }
}

impl Backend for HttpBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn generate(&self, cases: &[&Case], decoding: &GenerationConfig, done: &mut OnGenerated<'_>) -> Result<()> {
        let next = AtomicUsize::new(0);
        let done = Mutex::new(done);
        std::thread::scope(|s| {
            for _ in 0..self.client.config.concurrency.clamp(1, cases.len().max(1)) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let start = Instant::now();
                    let result = self
                        .client
                        .chat(&case.messages, decoding)
                        .map(|r| Generated {
                            text: r.text,
                            prompt_tokens: r.prompt_tokens,
                            completion_tokens: r.completion_tokens,
                            cached_prompt_tokens: r.cached_prompt_tokens,
                            latency_s: start.elapsed().as_secs_f64(),
                            finish: r.finish,
                        })
                        .map_err(|e| e.for_case(&case.id));
                    (done.lock().expect("not poisoned"))(i, result);
                });
            }
        });
        Ok(())
    }
}
