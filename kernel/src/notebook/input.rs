//! Asking the notebook user for a line of text from inside a cell.
//!
//! The kernel runs cells in a subprocess whose stdin carries the engine's own commands, so
//! `std::io::stdin()` must not be read directly. These functions use evcxr's input protocol:
//! a request line on stdout, which the kernel turns into a Jupyter `input_request` on the
//! stdin channel, and the user's answer written back as one line.

use std::io::{BufRead, Write};

/// The line evcxr's engine recognises as a request for input (`evcxr_input::GET_CMD`).
const INPUT_REQUEST: &str = "EVCXR_INPUT_REQUEST";
/// The same, for input that the front end should hide.
const PASSWORD_REQUEST: &str = "EVCXR_INPUT_REQUEST_PASSWORD";

/// Shows `prompt` in the notebook and returns the line the user typed (empty when the front
/// end does not accept input). evcxr cuts the prompt at its first `:`, so `"Name: "` shows
/// as `Name`.
pub fn input(prompt: &str) -> String {
    request(INPUT_REQUEST, prompt)
}

/// Like [`input`], but the front end hides what is typed (API keys, tokens).
pub fn password(prompt: &str) -> String {
    request(PASSWORD_REQUEST, prompt)
}

fn request(command: &str, prompt: &str) -> String {
    // The engine reads the prompt up to the first ':' after the command; keep it on one line.
    let prompt = prompt.replace(['\n', '\r'], " ");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{command}:{prompt}");
    let _ = out.flush();
    drop(out);
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(_) => line.trim_end_matches(['\n', '\r']).to_string(),
        Err(_) => String::new(),
    }
}
