//! The evcxr engine on its own thread: it owns the `CommandContext` (which is not `Send`),
//! preloads the tunelab library, runs cells one at a time, and forwards the subprocess's
//! stdout/stderr as they arrive (drained on their own threads so `execute` never blocks on
//! a full pipe).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::bridge::{self, DisplayLine};
use crate::library;
use crate::user_error;
use crate::value_display::ValueDisplay;

/// Something a running cell produced.
#[derive(Debug)]
pub enum Output {
    /// Text on stdout or stderr.
    Stream { stderr: bool, text: String },
    /// A live display update.
    Display(DisplayLine),
    /// Sent after a cell's last output: acknowledged once everything sent before it has been
    /// published, so the cell's result goes out after its output.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// How long the engine waits for a cell's end markers or the publisher's acknowledgement
/// before giving up on ordering (a subprocess without tunelab's stdout hook, a lost pipe).
const ORDERING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How a cell ended.
#[derive(Debug)]
pub enum CellResult {
    /// Success, with the cell value's MIME bundle (empty when the cell has no value).
    Ok(HashMap<String, String>),
    /// Compile error, panic or crash.
    Err { ename: String, evalue: String, traceback: Vec<String> },
}

enum Job {
    Execute(String, oneshot::Sender<CellResult>),
    Complete(String, usize, oneshot::Sender<(Vec<String>, usize, usize)>),
    Inspect(String, usize, oneshot::Sender<Option<(String, String)>>),
}

/// Answers a cell's request for input: `(prompt, is_password) -> line`.
pub type InputReader = Box<dyn Fn(String, bool) -> String + Send>;

/// Handle to the engine thread.
#[derive(Clone)]
pub struct Engine {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Whether the tunelab library is compiled and loaded.
    pub ready: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Arc<Mutex<std::process::Child>>>>>,
}

/// Routes SIGINT in the code-running subprocess to tunelab's interrupt flag.
const INSTALL_HANDLER: &str = "tunelab::notebook::install_interrupt_handler();";

/// What the engine runs before the first cell: settings, the `:dep` line that preloads the
/// library in `lib` (see [`crate::library`]) and the interrupt handler. A `lib` that does
/// not hold the library is reported (on the kernel's log) instead of preloaded.
/// `TUNELAB_KERNEL_PRELOAD=0` skips it all (plain evcxr, for latency comparisons).
fn preload_commands(lib: &Path) -> Result<Vec<String>, String> {
    if std::env::var("TUNELAB_KERNEL_PRELOAD").is_ok_and(|v| v == "0") {
        return Ok(Vec::new());
    }
    let lib = library::check(lib).map_err(|e| format!("tunelab: not preloading the library: {e:#}\n"))?;
    let mut commands = vec![":preserve_vars_on_panic 1".to_string(), ":cache 4000".into()];
    // evcxr builds cells and every dependency (candle, gemm, tunelab) in a profile with
    // debug assertions and overflow checks on; in tunelab's loops those checks made training
    // run at 0.45× the CLI's speed. The dependencies are built like release code: by the
    // work directory's cargo configuration, which leaves the cell's own crate unoptimized
    // (`:opt 0`: a cell compiles in about 0.1 s less; its heavy work runs in the library),
    // or else through cargo's environment for everything.
    if crate::work_dir::dependencies_optimized() {
        commands.push(":opt 0".into());
    } else {
        commands.extend([
            ":opt 2".into(),
            ":build_env CARGO_PROFILE_DEV_OPT_LEVEL=3".into(),
            ":build_env CARGO_PROFILE_DEV_DEBUG_ASSERTIONS=false".into(),
            ":build_env CARGO_PROFILE_DEV_OVERFLOW_CHECKS=false".into(),
        ]);
    }
    commands.push(format!(":dep tunelab = {{ package = \"tunelab-kernel\", path = \"{}\" }}", lib.display()));
    commands.push(INSTALL_HANDLER.into());
    Ok(commands)
}

/// A completion request naming the library, answered (and discarded) during the preload.
const ANALYZER_WARM_UP: &str = "let _ = tunelab::prelude::Model::lo";

/// Loads the library's crate graph into evcxr's rust-analyzer while the kernel starts.
///
/// evcxr asks rust-analyzer for the type of every variable a cell defines; the first such
/// question makes it read tunelab's and every dependency's sources, which took about 5 s
/// inside the first cell that had a `let` (each kernel start). A completion request
/// loads the same graph here instead, before the first cell, without compiling or defining
/// anything. Failure only costs the later cell that time.
fn warm_analyzer(ctx: &mut evcxr::CommandContext) {
    let _ = ctx.completions(ANALYZER_WARM_UP, ANALYZER_WARM_UP.len());
}

/// Compiles the notebook library into evcxr's cache, as the first cell of a kernel on a new
/// machine would (minutes on 2 cores), so that later kernels start in seconds. Cargo's
/// progress lines go to this process's stderr.
pub fn warm(lib: &Path) -> anyhow::Result<()> {
    let commands = preload_commands(lib).map_err(|e| anyhow::anyhow!("{}", e.trim()))?;
    let started = std::time::Instant::now();
    eprintln!("tunelab-kernel: compiling the notebook library into evcxr's cache (5–10 minutes on 2 cores the first time, seconds when it is already there)");
    let (mut ctx, outputs) = evcxr::CommandContext::new().map_err(|e| anyhow::anyhow!("evcxr failed to start: {e}"))?;
    // evcxr hands the subprocess's lines over channels that must be read, or it stalls.
    for lines in [outputs.stdout, outputs.stderr] {
        std::thread::spawn(move || lines.iter().filter(|l| !user_error::is_end_marker(l)).for_each(|l| eprintln!("{l}")));
    }
    for cmd in commands {
        ctx.execute(&cmd).map_err(|e| anyhow::anyhow!("preloading failed at `{cmd}`: {e}"))?;
    }
    eprintln!("tunelab-kernel: the notebook library is compiled ({:.0} s); new kernels start warm", started.elapsed().as_secs_f64());
    Ok(())
}

impl Engine {
    /// Starts the engine thread with the tunelab library in `lib` preloaded; outputs go to
    /// `out`, and a cell asking for input (see `tunelab::notebook::input`) gets the answer
    /// from `input(prompt, is_password)`.
    pub fn start(out: mpsc::UnboundedSender<Output>, input: InputReader, lib: PathBuf) -> anyhow::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let ready = Arc::new(AtomicBool::new(false));
        let child = Arc::new(Mutex::new(None));
        let (ready2, child2) = (ready.clone(), child.clone());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut ctx, outputs) = match evcxr::CommandContext::new() {
                Ok(x) => x,
                Err(e) => {
                    let _ = started_tx.send(Err(anyhow::anyhow!("evcxr failed to start: {e}")));
                    return;
                }
            };
            *child2.lock().expect("not poisoned") = Some(ctx.process_handle());
            let _ = started_tx.send(Ok(()));
            let watch = Arc::new(Mutex::new(StderrWatch::default()));
            let (ends_tx, ends) = std::sync::mpsc::channel();
            let (stdout_flush, flush_requests) = crossbeam_channel::unbounded();
            forward_stdout(outputs.stdout, out.clone(), flush_requests);
            forward_stderr(outputs.stderr, out.clone(), watch.clone(), ends_tx);
            let mut callbacks = evcxr::EvalCallbacks { input_reader: &|request| input(request.prompt, request.is_password) };
            // Whether the library is loaded (its value display then follows `:fmt`/`:types`).
            let mut preloaded = false;
            let mut value_display = ValueDisplay::default();
            match preload_commands(&lib) {
                Ok(commands) => {
                    preloaded = !commands.is_empty();
                    for cmd in commands {
                        if let Err(e) = ctx.execute(&cmd) {
                            let _ = out.send(Output::Stream { stderr: true, text: format!("tunelab: preloading failed at `{cmd}`: {e}\n") });
                        }
                    }
                    if preloaded {
                        warm_analyzer(&mut ctx);
                    }
                }
                Err(text) => {
                    let _ = out.send(Output::Stream { stderr: true, text });
                }
            }
            ready2.store(true, Ordering::SeqCst);
            while let Ok(job) = rx.recv() {
                match job {
                    Job::Execute(code, done) => {
                        *watch.lock().expect("not poisoned") = StderrWatch::default();
                        // End markers of an earlier cell whose wait gave up.
                        while ends.try_recv().is_ok() {}
                        let pid = |ctx: &evcxr::CommandContext| ctx.process_handle().lock().ok().map(|c| c.id());
                        let before = pid(&ctx);
                        let result = match ctx.execute_with_callbacks(&code, &mut callbacks) {
                            Ok(o) => {
                                // The code ran. evcxr returns once its stdout lines are taken
                                // from the channel; a flush of the stdout forwarder makes
                                // sure the last of them has been handed on too. Once stderr has
                                // delivered the cell's end marker, every stderr line has been
                                // forwarded (and seen by the stderr watch). The barrier then
                                // waits until all of it is published.
                                flush_stdout(&stdout_flush);
                                // Only code that ran in the subprocess ends with a marker;
                                // a cell of `:` commands alone has no "Execution" phase.
                                if o.phases.iter().any(|p| p.name == "Execution") {
                                    wait_for_end(&ends);
                                }
                                if let Some(took) = o.timing {
                                    let _ = out.send(Output::Stream {
                                        stderr: false,
                                        text: timing_text(took, o.phases.iter().map(|p| (p.name.as_str(), p.duration))),
                                    });
                                }
                                if preloaded && value_display.follow(&code) {
                                    if let Err(e) = ctx.execute(&value_display.code()) {
                                        let _ = out.send(Output::Stream { stderr: true, text: format!("tunelab: value display settings not applied: {e}\n") });
                                    }
                                    wait_for_end(&ends);
                                }
                                barrier(&out);
                                // evcxr catches a panic (keeping variables) or a `?` error and
                                // reports success; stderr is how we know.
                                match watch.lock().expect("not poisoned").failure.take() {
                                    Some((ename, msg)) => CellResult::Err { ename, evalue: msg.clone(), traceback: vec![msg] },
                                    None => CellResult::Ok(o.content_by_mime_type),
                                }
                            }
                            Err(e) => error_result(e),
                        };
                        // Keep the interrupt target current: evcxr restarts a crashed or killed
                        // subprocess, and the new one needs tunelab's SIGINT handler again.
                        *child2.lock().expect("not poisoned") = Some(ctx.process_handle());
                        if before != pid(&ctx) && ready2.load(Ordering::SeqCst) {
                            let _ = ctx.execute(INSTALL_HANDLER);
                            if preloaded && value_display != ValueDisplay::default() {
                                let _ = ctx.execute(&value_display.code());
                            }
                        }
                        let _ = done.send(result);
                    }
                    Job::Inspect(code, pos, done) => {
                        // evcxr answers "No documentation found" when rust-analyzer has nothing.
                        let r = ctx.hover_at(&code, pos).ok().filter(|(plain, _)| !plain.trim().is_empty() && plain.trim() != "No documentation found");
                        let _ = done.send(r);
                    }
                    Job::Complete(code, pos, done) => {
                        let r = match ctx.completions(&code, pos) {
                            Ok(c) => (c.completions.into_iter().map(|c| c.code).collect(), c.start_offset, c.end_offset),
                            Err(_) => (Vec::new(), pos, pos),
                        };
                        let _ = done.send(r);
                    }
                }
            }
        });
        started_rx.recv()??;
        Ok(Self { jobs, ready, child })
    }

    /// Runs a cell; resolves when it finishes.
    pub async fn execute(&self, code: String) -> CellResult {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Execute(code, tx)).is_err() {
            return CellResult::Err { ename: "KernelError".into(), evalue: "the evcxr engine stopped".into(), traceback: vec![] };
        }
        rx.await.unwrap_or(CellResult::Err { ename: "KernelError".into(), evalue: "the evcxr engine stopped".into(), traceback: vec![] })
    }

    /// Completions at byte offset `pos` of `code`: (matches, start, end).
    pub async fn complete(&self, code: String, pos: usize) -> (Vec<String>, usize, usize) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Complete(code, pos, tx)).is_err() {
            return (Vec::new(), pos, pos);
        }
        rx.await.unwrap_or((Vec::new(), pos, pos))
    }

    /// Hover information (plain text, HTML) for the expression ending at byte `pos`.
    pub async fn inspect(&self, code: String, pos: usize) -> Option<(String, String)> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Inspect(code, pos, tx)).ok()?;
        rx.await.ok().flatten()
    }

    /// Process id of the subprocess running cells.
    pub fn child_pid(&self) -> Option<u32> {
        let guard = self.child.lock().ok()?;
        let handle = guard.as_ref()?;
        let child = handle.lock().ok()?;
        Some(child.id())
    }

    /// Kills the subprocess (a hard interrupt; evcxr starts a new one, losing variables).
    pub fn kill_child(&self) {
        if let Ok(guard) = self.child.lock() {
            if let Some(handle) = guard.as_ref() {
                if let Ok(mut child) = handle.lock() {
                    let _ = child.kill();
                }
            }
        }
    }
}

/// What stderr said about the running cell. Failure is known only from the subprocess's
/// markers (see [`user_error`]); ordinary lines only supply the message shown with it.
#[derive(Default)]
struct StderrWatch {
    /// (ename, message) of the failure seen, if any.
    failure: Option<(String, String)>,
    /// The last ordinary stderr line (evcxr prints a `?` error just before the marker).
    last_line: Option<String>,
    /// The most recent panic message (`thread '…' panicked at …` and the line after it).
    panic_message: Option<String>,
    /// The previous line began a panic message; this one continues it.
    after_panic_line: bool,
}

impl StderrWatch {
    /// Updates the watch with one stderr line; returns whether the line is for the user.
    fn see(&mut self, line: &str) -> bool {
        match user_error::parse_marker(line) {
            Some(user_error::Failure::UserError) => {
                let msg = self.last_line.take().unwrap_or_else(|| "the cell returned an error through `?`".into());
                self.failure.get_or_insert(("Error".into(), msg));
                return false;
            }
            Some(user_error::Failure::Panic) => {
                let msg = self.panic_message.take().unwrap_or_else(|| "the cell panicked".into());
                self.failure.get_or_insert(("Panic".into(), msg));
                return false;
            }
            None => {}
        }
        if line.starts_with("thread '") && line.contains("panicked at") {
            self.panic_message = Some(line.to_string());
            self.after_panic_line = true;
        } else if self.after_panic_line {
            if let Some(msg) = self.panic_message.as_mut() {
                msg.push('\n');
                msg.push_str(line);
            }
            self.after_panic_line = false;
        }
        self.last_line = Some(line.to_string());
        true
    }
}

/// What `:timing` shows after a cell: the total and each of evcxr's phases.
fn timing_text<'a>(took: std::time::Duration, phases: impl Iterator<Item = (&'a str, std::time::Duration)>) -> String {
    let mut text = format!("Took {}ms\n", took.as_millis());
    for (name, duration) in phases {
        text.push_str(&format!("  {name}: {}ms\n", duration.as_millis()));
    }
    text
}

/// Waits until stderr has delivered a cell's end marker (or the timeout).
fn wait_for_end(ends: &std::sync::mpsc::Receiver<()>) {
    let _ = ends.recv_timeout(ORDERING_TIMEOUT);
}

/// Waits until the publisher has published every output sent before this call.
fn barrier(out: &mpsc::UnboundedSender<Output>) {
    let (ack, acked) = std::sync::mpsc::channel();
    if out.send(Output::Barrier(ack)).is_ok() {
        let _ = acked.recv_timeout(ORDERING_TIMEOUT);
    }
}

/// Forwards stdout lines (text, or live-display lines) to `out`. A flush request is
/// answered once every line taken so far, and any still queued, has been handed on: one
/// loop does both, so no line can be between the channel and `out` when it answers.
fn forward_stdout(
    rx: crossbeam_channel::Receiver<String>,
    out: mpsc::UnboundedSender<Output>,
    flushes: crossbeam_channel::Receiver<std::sync::mpsc::Sender<()>>,
) {
    let send = move |line: String| {
        let msg = match bridge::parse(&line) {
            Some(d) => Output::Display(d),
            None => Output::Stream { stderr: false, text: format!("{line}\n") },
        };
        out.send(msg).is_ok()
    };
    std::thread::spawn(move || loop {
        crossbeam_channel::select! {
            recv(rx) -> line => {
                if !line.is_ok_and(&send) {
                    return;
                }
            },
            recv(flushes) -> ack => {
                for line in rx.try_iter() {
                    if !send(line) {
                        return;
                    }
                }
                if let Ok(ack) = ack {
                    let _ = ack.send(());
                }
            },
        }
    });
}

/// Waits until the stdout forwarder has handed on every line evcxr has queued so far
/// (evcxr returns from a cell only once its stdout lines are queued and taken).
fn flush_stdout(flush: &crossbeam_channel::Sender<std::sync::mpsc::Sender<()>>) {
    let (ack, acked) = std::sync::mpsc::channel();
    if flush.send(ack).is_ok() {
        let _ = acked.recv_timeout(ORDERING_TIMEOUT);
    }
}

/// Forwards stderr lines to `out` through the cell's [`StderrWatch`]; a cell's end marker
/// is not forwarded but reported on `ends`.
fn forward_stderr(
    rx: crossbeam_channel::Receiver<String>,
    out: mpsc::UnboundedSender<Output>,
    watch: Arc<Mutex<StderrWatch>>,
    ends: std::sync::mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            if user_error::is_end_marker(&line) {
                let _ = ends.send(());
                continue;
            }
            if !watch.lock().expect("not poisoned").see(&line) {
                continue;
            }
            if out.send(Output::Stream { stderr: true, text: format!("{line}\n") }).is_err() {
                break;
            }
        }
    });
}

fn error_result(e: evcxr::Error) -> CellResult {
    match e {
        evcxr::Error::CompilationErrors(errors) => {
            let traceback: Vec<String> = errors.iter().map(|e| e.rendered()).collect();
            let evalue = errors.iter().map(|e| e.message()).collect::<Vec<_>>().join("\n");
            CellResult::Err { ename: "CompilationError".into(), evalue, traceback }
        }
        evcxr::Error::SubprocessTerminated(msg) => CellResult::Err { ename: "SubprocessTerminated".into(), evalue: msg.clone(), traceback: vec![msg] },
        other => {
            let msg = other.to_string();
            let ename = if msg.contains("panic") || msg.contains("Panic") { "Panic" } else { "Error" };
            CellResult::Err { ename: ename.into(), evalue: msg.clone(), traceback: vec![msg] }
        }
    }
}
