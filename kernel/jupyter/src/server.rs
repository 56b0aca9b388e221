//! The Jupyter side: sockets from the connection file, the shell loop (one cell at a time),
//! the control loop (interrupt, shutdown), heartbeat, and the IOPub pump that turns engine
//! output into stream and display messages parented to the running cell.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use jupyter_protocol::{ConnectionInfo, JupyterMessage, JupyterMessageContent};
use jupyter_zmq_client::{
    create_kernel_control_connection, create_kernel_heartbeat_connection, create_kernel_iopub_connection, create_kernel_shell_connection,
    create_kernel_stdin_connection,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::engine::{CellResult, Engine, Output};

/// How long an interrupted cell may take to stop by itself (a training loop checkpoints
/// and returns at its next step) before the subprocess is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(20);

/// Runs the kernel until a shutdown request, preloading the tunelab library in `lib`.
pub fn run(connection_file: &Path, lib: PathBuf) -> anyhow::Result<()> {
    // evcxr builds cells with its own target directory; an inherited one would break it.
    std::env::remove_var("CARGO_TARGET_DIR");
    let text = std::fs::read_to_string(connection_file).with_context(|| format!("reading {}", connection_file.display()))?;
    let info: ConnectionInfo = serde_json::from_str(&text).with_context(|| format!("parsing {}", connection_file.display()))?;
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(serve(info, lib))
}

/// A reply or broadcast of `msg_type` with `content`, parented to `parent`.
fn message(parent: &JupyterMessage, msg_type: &str, content: Value) -> anyhow::Result<JupyterMessage> {
    let content = JupyterMessageContent::from_type_and_content(msg_type, content).with_context(|| format!("building {msg_type}"))?;
    Ok(JupyterMessage::new(content, Some(parent)))
}

fn status(parent: &JupyterMessage, state: &str) -> anyhow::Result<JupyterMessage> {
    message(parent, "status", json!({"execution_state": state}))
}

fn kernel_info() -> Value {
    json!({
        "status": "ok",
        "protocol_version": "5.3",
        "implementation": "tunelab-kernel",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {
            "name": "rust", "version": "", "mimetype": "text/rust", "file_extension": ".rs",
            "pygments_lexer": "rust", "codemirror_mode": "rust", "nbconvert_exporter": "rust",
        },
        "banner": "tunelab (Rust): LoRA fine-tuning notebooks on the evcxr engine; `use tunelab::prelude::*;`",
        "help_links": [],
        "debugger": false,
    })
}

/// State shared by the shell loop, the control loop and the output pump.
struct Shared {
    /// The execute request whose cell is running (outputs are parented to it).
    current: Mutex<Option<JupyterMessage>>,
    iopub: mpsc::UnboundedSender<JupyterMessage>,
    /// Wakes a pending `input_request` when the cell is interrupted, so it stops waiting.
    cancel_input: tokio::sync::Notify,
    /// The cells run so far, for `history_request`.
    history: Mutex<crate::history::History>,
}

/// A cell's request for a line of input, with where to send the answer.
struct InputAsk {
    prompt: String,
    password: bool,
    answer: std::sync::mpsc::Sender<String>,
}

impl Shared {
    fn publish(&self, m: anyhow::Result<JupyterMessage>) {
        match m {
            Ok(m) => {
                let _ = self.iopub.send(m);
            }
            Err(e) => eprintln!("tunelab-kernel: {e:#}"),
        }
    }
}

async fn serve(info: ConnectionInfo, lib: PathBuf) -> anyhow::Result<()> {
    let session = format!("tunelab-{}", std::process::id());
    let mut iopub = create_kernel_iopub_connection(&info, &session).await?;
    let mut shell = create_kernel_shell_connection(&info, &session).await?;
    let control = create_kernel_control_connection(&info, &session).await?;
    let stdin = create_kernel_stdin_connection(&info, &session).await?;
    let mut heartbeat = create_kernel_heartbeat_connection(&info).await?;
    tokio::spawn(async move { while heartbeat.single_heartbeat().await.is_ok() {} });

    let (iopub_tx, mut iopub_rx) = mpsc::unbounded_channel::<JupyterMessage>();
    tokio::spawn(async move {
        while let Some(m) = iopub_rx.recv().await {
            if let Err(e) = iopub.send(m).await {
                eprintln!("tunelab-kernel: iopub send failed: {e}");
            }
        }
    });
    let shared = Arc::new(Shared { current: Mutex::new(None), iopub: iopub_tx, cancel_input: tokio::sync::Notify::new(), history: Mutex::default() });

    let (ask_tx, ask_rx) = mpsc::unbounded_channel::<InputAsk>();
    tokio::spawn(stdin_loop(stdin, ask_rx, shared.clone()));
    let ask_user = move |prompt: String, password: bool| {
        let (answer, reply) = std::sync::mpsc::channel();
        if ask_tx.send(InputAsk { prompt, password, answer }).is_err() {
            return String::new();
        }
        reply.recv().unwrap_or_default()
    };

    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let engine = Engine::start(out_tx, Box::new(ask_user), lib)?;
    tokio::spawn(pump_outputs(out_rx, shared.clone()));
    tokio::spawn(control_loop_task(control_loop(control, engine.clone(), shared.clone())));

    let mut count = 0u32;
    loop {
        let req = match crate::wire::read(&mut shell).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("tunelab-kernel: bad shell message: {e}");
                continue;
            }
        };
        shared.publish(status(&req, "busy"));
        let content = serde_json::to_value(&req.content).unwrap_or(Value::Null);
        let reply = match req.message_type() {
            "kernel_info_request" => Some(("kernel_info_reply", kernel_info())),
            "execute_request" => {
                count += 1;
                Some(("execute_reply", execute(&req, &content, count, &engine, &shared).await))
            }
            "complete_request" => {
                let code = content["code"].as_str().unwrap_or("").to_string();
                let pos = char_to_byte(&code, content["cursor_pos"].as_u64().unwrap_or(0) as usize);
                let (matches, start, end) = engine.complete(code.clone(), pos).await;
                Some((
                    "complete_reply",
                    json!({"status": "ok", "matches": matches, "cursor_start": byte_to_char(&code, start), "cursor_end": byte_to_char(&code, end), "metadata": {}}),
                ))
            }
            "inspect_request" => {
                let code = content["code"].as_str().unwrap_or("").to_string();
                let pos = char_to_byte(&code, content["cursor_pos"].as_u64().unwrap_or(0) as usize);
                let body = match engine.inspect(code, pos).await {
                    Some((plain, html)) => json!({"status": "ok", "found": true, "data": {"text/plain": plain, "text/html": html}, "metadata": {}}),
                    None => json!({"status": "ok", "found": false, "data": {}, "metadata": {}}),
                };
                Some(("inspect_reply", body))
            }
            "is_complete_request" => Some(("is_complete_reply", crate::completeness::check(content["code"].as_str().unwrap_or("")).reply())),
            "comm_info_request" => Some(("comm_info_reply", json!({"status": "ok", "comms": {}}))),
            "history_request" => Some(("history_reply", shared.history.lock().expect("not poisoned").reply(&content))),
            "shutdown_request" => {
                let restart = content["restart"].as_bool().unwrap_or(false);
                let _ = shell.send(message(&req, "shutdown_reply", json!({"status": "ok", "restart": restart}))?).await;
                shared.publish(status(&req, "idle"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::process::exit(0);
            }
            other => {
                eprintln!("tunelab-kernel: ignoring {other}");
                None
            }
        };
        if let Some((reply_type, body)) = reply {
            match message(&req, reply_type, body) {
                Ok(m) => {
                    if let Err(e) = shell.send(m).await {
                        eprintln!("tunelab-kernel: shell send failed: {e}");
                    }
                }
                Err(e) => eprintln!("tunelab-kernel: {e:#}"),
            }
        }
        shared.publish(status(&req, "idle"));
    }
}

/// Jupyter counts cursor positions in characters (code points); evcxr in bytes.
fn char_to_byte(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(b, _)| b)
}

fn byte_to_char(s: &str, bytes: usize) -> usize {
    s[..bytes.min(s.len())].chars().count()
}

async fn execute(req: &JupyterMessage, content: &Value, count: u32, engine: &Engine, shared: &Shared) -> Value {
    let code = content["code"].as_str().unwrap_or("").to_string();
    shared.publish(message(req, "execute_input", json!({"code": code, "execution_count": count})));
    *shared.current.lock().expect("not poisoned") = Some(req.clone());
    if !engine.ready.load(std::sync::atomic::Ordering::SeqCst) {
        shared.publish(message(
            req,
            "stream",
            json!({"name": "stderr", "text":
            "tunelab: preparing the notebook library — compiling tunelab and its dependencies (candle, tokenizers, minijinja). \
             The first start on a new machine takes about 5–10 minutes on 2 cores; later starts reuse the compiled cache and take seconds.\n"}),
        ));
    }
    // The engine answers after the cell's output has been published (its end markers and a
    // barrier through the output pump), so the result below follows it on IOPub.
    let result = engine.execute(code.clone()).await;
    *shared.current.lock().expect("not poisoned") = None;
    let plain = match &result {
        CellResult::Ok(bundle) => bundle.get("text/plain").map(String::as_str),
        CellResult::Err { .. } => None,
    };
    shared.history.lock().expect("not poisoned").record(count.into(), &code, plain);
    match result {
        CellResult::Ok(bundle) => {
            if !bundle.is_empty() {
                shared.publish(message(req, "execute_result", json!({"execution_count": count, "data": bundle, "metadata": {}, "transient": {}})));
            }
            json!({"status": "ok", "execution_count": count, "payload": [], "user_expressions": {}})
        }
        CellResult::Err { ename, evalue, traceback } => {
            shared.publish(message(req, "error", json!({"ename": ename, "evalue": evalue, "traceback": traceback})));
            json!({"status": "error", "execution_count": count, "ename": ename, "evalue": evalue, "traceback": traceback})
        }
    }
}

async fn pump_outputs(mut rx: mpsc::UnboundedReceiver<Output>, shared: Arc<Shared>) {
    let mut shown: HashSet<String> = HashSet::new();
    while let Some(out) = rx.recv().await {
        if let Output::Barrier(ack) = out {
            // Everything received before it has been handed to the IOPub sender.
            let _ = ack.send(());
            continue;
        }
        let parent = shared.current.lock().expect("not poisoned").clone();
        let Some(parent) = parent else {
            // Output outside a cell (preloading): keep it in the kernel's log.
            if let Output::Stream { text, .. } = out {
                eprint!("{text}");
            }
            continue;
        };
        let m = match out {
            Output::Stream { stderr, text } => message(&parent, "stream", json!({"name": if stderr { "stderr" } else { "stdout" }, "text": text})),
            Output::Display(d) if d.clear => message(&parent, "clear_output", json!({"wait": d.wait})),
            Output::Barrier(_) => continue,
            Output::Display(d) => {
                let transient = json!({"display_id": d.display_id});
                if d.update && shown.contains(&d.display_id) {
                    message(&parent, "update_display_data", json!({"data": d.data, "metadata": {}, "transient": transient}))
                } else {
                    shown.insert(d.display_id.clone());
                    message(&parent, "display_data", json!({"data": d.data, "metadata": {}, "transient": transient}))
                }
            }
        };
        shared.publish(m);
    }
}

/// Serves cells' input requests: an `input_request` on the stdin channel to the front end
/// that sent the running cell (when it allows input), answered by its `input_reply`.
async fn stdin_loop(mut stdin: jupyter_zmq_client::KernelStdinConnection, mut asks: mpsc::UnboundedReceiver<InputAsk>, shared: Arc<Shared>) {
    while let Some(ask) = asks.recv().await {
        let parent = shared.current.lock().expect("not poisoned").clone();
        let allowed = parent.as_ref().is_some_and(|p| serde_json::to_value(&p.content).is_ok_and(|c| c["allow_stdin"].as_bool().unwrap_or(false)));
        let Some(parent) = parent.filter(|_| allowed) else {
            if let Some(p) = shared.current.lock().expect("not poisoned").as_ref() {
                shared.publish(message(
                    p,
                    "stream",
                    json!({"name": "stderr", "text": "tunelab: the cell asked for input, but this front end does not accept input; using an empty answer\n"}),
                ));
            }
            let _ = ask.answer.send(String::new());
            continue;
        };
        let value = match message(&parent, "input_request", json!({"prompt": ask.prompt, "password": ask.password})) {
            Ok(request) => match stdin.send(request).await {
                Ok(()) => tokio::select! {
                    reply = stdin.read() => match reply {
                        Ok(r) => serde_json::to_value(&r.content).ok().and_then(|c| c["value"].as_str().map(str::to_string)).unwrap_or_default(),
                        Err(e) => {
                            eprintln!("tunelab-kernel: bad input_reply: {e}");
                            String::new()
                        }
                    },
                    _ = shared.cancel_input.notified() => String::new(),
                },
                Err(e) => {
                    eprintln!("tunelab-kernel: stdin send failed: {e}");
                    String::new()
                }
            },
            Err(e) => {
                eprintln!("tunelab-kernel: {e:#}");
                String::new()
            }
        };
        let _ = ask.answer.send(value);
    }
}

async fn control_loop_task(fut: impl std::future::Future<Output = anyhow::Result<()>>) {
    if let Err(e) = fut.await {
        eprintln!("tunelab-kernel: control channel stopped: {e:#}");
    }
}

async fn control_loop(mut control: jupyter_zmq_client::KernelControlConnection, engine: Engine, shared: Arc<Shared>) -> anyhow::Result<()> {
    loop {
        let req = control.read().await?;
        match req.message_type() {
            "interrupt_request" => {
                interrupt(&engine, &shared);
                control.send(message(&req, "interrupt_reply", json!({"status": "ok"}))?).await?;
            }
            "shutdown_request" => {
                let content = serde_json::to_value(&req.content).unwrap_or(Value::Null);
                let restart = content["restart"].as_bool().unwrap_or(false);
                control.send(message(&req, "shutdown_reply", json!({"status": "ok", "restart": restart}))?).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::process::exit(0);
            }
            "kernel_info_request" => control.send(message(&req, "kernel_info_reply", kernel_info())?).await?,
            other => eprintln!("tunelab-kernel: ignoring control {other}"),
        }
    }
}

/// Asks the running cell to stop: SIGINT to the subprocess sets tunelab's interrupt flag (a
/// training loop checkpoints and returns at its next step); a cell still running after
/// [`INTERRUPT_GRACE`] is stopped by killing the subprocess.
fn interrupt(engine: &Engine, shared: &Arc<Shared>) {
    let running = shared.current.lock().expect("not poisoned").as_ref().map(|m| m.header.msg_id.clone());
    let Some(msg_id) = running else { return };
    shared.cancel_input.notify_waiters();
    if let Some(pid) = engine.child_pid() {
        let _ = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status();
    }
    let (engine, shared) = (engine.clone(), shared.clone());
    tokio::spawn(async move {
        tokio::time::sleep(INTERRUPT_GRACE).await;
        let still = shared.current.lock().expect("not poisoned").as_ref().is_some_and(|m| m.header.msg_id == msg_id);
        if still {
            engine.kill_child();
        }
    });
}
