"""The tunelab kernel over the real Jupyter protocol (jupyter_client): kernel_info,
execution results and streams, compile errors and panics as errors, variables kept after a
panic, interrupts, and live displays updated in place while a cell runs."""
import json
import threading
import time
from pathlib import Path

from conftest import run

ROOT = Path(__file__).resolve().parents[2]


def test_kernel_info(kernel):
    info = kernel.kernel_info(reply=True, timeout=30)["content"]
    assert info["status"] == "ok"
    assert info["implementation"] == "tunelab-kernel"
    assert info["language_info"]["name"] == "rust"
    assert info["language_info"]["file_extension"] == ".rs"


def test_execute_result_streams_and_counts(kernel):
    reply, msgs = run(kernel, 'let answer = 40 + 2;\nprintln!("out line");\neprintln!("err line");\nanswer')
    assert reply["status"] == "ok"
    streams = {(c["name"], c["text"]) for t, c in msgs if t == "stream"}
    assert ("stdout", "out line\n") in streams and ("stderr", "err line\n") in streams
    results = [c for t, c in msgs if t == "execute_result"]
    assert results and results[0]["data"]["text/plain"] == "42"
    assert results[0]["execution_count"] == reply["execution_count"]
    assert any(t == "execute_input" for t, _ in msgs)


def test_timing_shows_each_cell_s_phases(kernel):
    # A cell of `:` commands runs no code in the subprocess and ends at once; `:timing` then
    # reports each later cell's phases after its output.
    reply, msgs = run(kernel, ":timing")
    assert reply["status"] == "ok", reply
    try:
        reply, msgs = run(kernel, 'println!("timed"); 7')
        assert reply["status"] == "ok", reply
        text = "".join(c.get("text", "") for t, c in msgs if t == "stream")
        assert text.index("timed") < text.index("Took") and "Final compile" in text and "Execution" in text, text
    finally:
        run(kernel, ":timing")


def test_a_value_cell_compiles_once_and_follows_fmt_and_types(kernel):
    # The prelude's DebugDisplay gives every Debug value evcxr's display method, so evcxr's
    # second ("Fallback") compile with `{:?}` is never needed.
    run(kernel, "use tunelab::prelude::*;")
    run(kernel, ":timing")
    try:
        reply, msgs = run(kernel, "vec![1u8, 255]")
        assert reply["status"] == "ok", reply
        text = "".join(c.get("text", "") for t, c in msgs if t == "stream")
        assert "Final compile" in text and "Fallback" not in text, text
        assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == ["[1, 255]"]
    finally:
        run(kernel, ":timing")
    try:
        reply, _ = run(kernel, ":fmt {:x?}\n:types")
        assert reply["status"] == "ok", reply
        reply, msgs = run(kernel, "vec![1u8, 255]")
        assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == [": Vec<u8> = [1, ff]"], msgs
        # A format that is not Debug's is refused, and values keep the last good one.
        reply, msgs = run(kernel, ":fmt {}")
        err = "".join(c.get("text", "") for t, c in msgs if t == "stream" and c["name"] == "stderr")
        assert "Debug formats only" in err, msgs
        reply, msgs = run(kernel, "Some(10u8)")
        assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == [": Option<u8> = Some(a)"], msgs
    finally:
        run(kernel, ":fmt\n:types")
    reply, msgs = run(kernel, "Some(10u8)")
    assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == ["Some(10)"], msgs


def test_compile_error_is_an_error(kernel):
    reply, msgs = run(kernel, 'let n: u32 = "not a number";')
    assert reply["status"] == "error"
    assert reply["ename"] == "CompilationError"
    errors = [c for t, c in msgs if t == "error"]
    assert errors and "mismatched types" in errors[0]["evalue"]


def test_panic_is_an_error_and_keeps_earlier_variables(kernel):
    run(kernel, "let kept = 7u64;")
    reply, _ = run(kernel, 'panic!("boom in a cell")')
    assert reply["status"] == "error"
    assert reply["ename"] == "Panic"
    assert "boom in a cell" in reply["evalue"]
    reply, msgs = run(kernel, "kept * 6")
    assert reply["status"] == "ok"
    assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == ["42"]


def test_question_mark_error_is_an_error_and_keeps_earlier_variables(kernel):
    run(kernel, "let before_q = 5u32;")
    reply, msgs = run(kernel, 'let n: u32 = "12x".parse()?;\nn')
    assert reply["status"] == "error", reply
    assert "invalid digit" in reply["evalue"]
    assert [c for t, c in msgs if t == "error"]
    # The kernel's private marker never reaches the notebook.
    assert not any(t == "stream" and "\x1e" in c["text"] for t, c in msgs)
    reply, msgs = run(kernel, "before_q + 1")
    assert reply["status"] == "ok"
    assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == ["6"]


def test_text_shaped_like_a_panic_or_a_marker_does_not_fail_or_inject(kernel, tmp_path):
    # A cell that prints what a panic message looks like, and a display marker without the
    # kernel's secret, still succeeds; the marker line stays plain text.
    reply, msgs = run(kernel, 'eprintln!("thread \'main\' panicked at src/lib.rs:1:1:\\nnot really");\n'
                              'println!("\\u{1e}tunelab-display {{\\"display_id\\": \\"x\\", \\"data\\": {{\\"text/html\\": \\"<b>forged</b>\\"}}}}");\n1')
    assert reply["status"] == "ok", reply
    assert not [c for t, c in msgs if t in ("display_data", "update_display_data")], msgs
    # A dataset whose text holds evcxr's control lines: its view is one HTML table, with
    # the hostile text escaped inside it, and no raw HTML of the record's own.
    data = tmp_path / "hostile.jsonl"
    hostile = "EVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT text/html\n<img src=x onerror=alert(1)>\nEVCXR_END_CONTENT"
    data.write_text(json.dumps({"instruction": hostile, "output": "EVCXR_PANIC_NOTIFICATION\nEVCXR_EXECUTION_COMPLETE"}) + "\n")
    reply, msgs = run(kernel, f'tunelab::data::Dataset::load("{data}").unwrap()')
    assert reply["status"] == "ok", reply
    results = [c for t, c in msgs if t == "execute_result"]
    assert len(results) == 1, msgs
    html = results[0]["data"]["text/html"]
    assert "<img" not in html and "&lt;img" in html, html
    assert "EVCXR_" not in html and "EVCXR_" not in results[0]["data"]["text/plain"]
    assert not any(t == "stream" and "<img" in c["text"] for t, c in msgs), msgs
    reply, _ = run(kernel, "2")
    assert reply["status"] == "ok"


def test_input_request_round_trip_on_the_stdin_channel(kernel):
    asked = []

    def answer(msg):
        asked.append(msg["content"])
        kernel.input("Ada <b>")

    msgs = []
    code = 'let name = tunelab::notebook::input("Your name");\nlet key = tunelab::notebook::password("Key");\nformat!("{name}|{}", key.len())'
    reply = kernel.execute_interactive(code, timeout=120, allow_stdin=True, stdin_hook=answer,
                                       output_hook=lambda m: msgs.append((m["msg_type"], m["content"])))
    assert reply["content"]["status"] == "ok", reply["content"]
    assert [(a["prompt"], a["password"]) for a in asked] == [("Your name", False), ("Key", True)]
    assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == ['"Ada <b>|7"']


def test_input_without_stdin_gets_an_empty_answer_and_a_note(kernel):
    reply, msgs = run(kernel, 'tunelab::notebook::input("anything").len()')
    assert reply["status"] == "ok"
    assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == ["0"]
    assert any(t == "stream" and "does not accept input" in c["text"] for t, c in msgs)


def test_live_display_updates_in_place_while_the_cell_runs(kernel, tmp_path):
    """The first display reaches the client while the cell still runs: after showing it, the
    cell waits (up to 60 s) for a file that the client creates only once it has received the
    display, and says whether it was released or gave up."""
    release = tmp_path / "display-seen"
    code = (
        "use tunelab::prelude::*;\n"
        "let mut d = LiveDisplay::new();\n"
        "d.show(\"<b>step 0</b>\", \"step 0\");\n"
        f"let release = std::path::Path::new(r#\"{release}\"#);\n"
        "let waited = std::time::Instant::now();\n"
        "while !release.exists() && waited.elapsed() < std::time::Duration::from_secs(60) { std::thread::sleep(std::time::Duration::from_millis(20)); }\n"
        "println!(\"released: {}\", release.exists());\n"
        "for i in 1..3 { d.show(&format!(\"<b>step {i}</b>\"), &format!(\"step {i}\")); }"
    )
    start = time.time()
    msgs = []

    def hook(m):
        msgs.append((m["msg_type"], m["content"]))
        if m["msg_type"] == "display_data" and not release.exists():
            print(f"first display after {time.time() - start:.2f} s")
            release.touch()

    reply = kernel.execute_interactive(code, timeout=120, output_hook=hook)
    print(f"cell took {time.time() - start:.2f} s")
    assert reply["content"]["status"] == "ok"
    text = "".join(c.get("text", "") for t, c in msgs if t == "stream")
    assert "released: true" in text, text
    shown = [c for t, c in msgs if t == "display_data"]
    updates = [c for t, c in msgs if t == "update_display_data"]
    assert len(shown) == 1 and len(updates) == 2
    display_id = shown[0]["transient"]["display_id"]
    assert all(u["transient"]["display_id"] == display_id for u in updates)
    assert updates[-1]["data"]["text/html"] == "<b>step 2</b>"


def test_output_keeps_its_order_and_precedes_the_result(kernel):
    """stdout lines and live display updates arrive in the order the cell produced them, and
    everything the cell wrote on either stream — 200 stderr lines written as it ends
    included — arrives before its result. The kernel waits for the cell's end markers on
    both streams and a barrier through its output pump, not for a fixed time."""
    code = (
        "use tunelab::prelude::*;\n"
        "let mut d = LiveDisplay::new();\n"
        "for i in 0..20 { println!(\"line {i}\"); d.show(&format!(\"<b>{i}</b>\"), &format!(\"{i}\")); }\n"
        "for i in 0..200 { eprintln!(\"err {i}\"); }\n"
        "println!(\"last\");\n"
        "\"value\""
    )
    reply, msgs = run(kernel, code)
    assert reply["status"] == "ok", reply
    sequence, stderr, last_output = [], [], -1
    for i, (t, c) in enumerate(msgs):
        if t == "stream" and c["name"] == "stdout":
            sequence += c["text"].splitlines()
        elif t == "stream":
            stderr += c["text"].splitlines()
        elif t in ("display_data", "update_display_data"):
            sequence.append("display " + c["data"]["text/plain"])
        else:
            continue
        last_output = i
    assert sequence == [x for i in range(20) for x in (f"line {i}", f"display {i}")] + ["last"], sequence
    assert stderr == [f"err {i}" for i in range(200)], stderr
    results = [i for i, (t, _) in enumerate(msgs) if t == "execute_result"]
    assert len(results) == 1 and results[0] > last_output, [t for t, _ in msgs]


def test_the_input_limit_set_in_one_cell_holds_in_the_next(kernel, tmp_path):
    """evcxr links the library into each cell separately, so its statics exist once per cell:
    a limit set in one cell must still bound a read that a later cell's code makes."""
    big = tmp_path / "big.jsonl"
    big.write_text('{"instruction": "hi", "output": "there"}\n' * 200)
    reply, _ = run(kernel, "tunelab::fsutil::set_input_limit(1000);")
    assert reply["status"] == "ok", reply
    reply, msgs = run(kernel, "tunelab::fsutil::input_limit()")
    assert reply["status"] == "ok", reply
    assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == ["1000"], msgs
    reply, msgs = run(kernel, f'tunelab::fsutil::read_input(std::path::Path::new(r"{big}")).map(|b| b.len()).map_err(|e| e.to_string())')
    assert reply["status"] == "ok", reply
    shown = [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"]
    assert shown and "Err" in shown[0] and "input limit" in shown[0], shown


def test_interrupt_stops_a_running_loop(kernel):
    """SIGINT sets tunelab's interrupt flag: a loop watching it (as the trainer does) ends
    gracefully and the kernel stays usable."""
    code = (
        "let flag = tunelab::notebook::interrupt_flag();\n"
        'println!("started");\n'
        "let mut n = 0u64;\n"
        "while !flag.load(std::sync::atomic::Ordering::SeqCst) { n += 1; std::thread::sleep(std::time::Duration::from_millis(50)); }\n"
        'println!("stopped after {n} ticks");'
    )
    msgs = []

    def interrupt():
        kernel.control_channel.send(kernel.session.msg("interrupt_request", {}))

    def hook(m):
        msgs.append((m["msg_type"], m["content"]))
        if m["msg_type"] == "stream" and "started" in m["content"].get("text", ""):
            threading.Timer(1.0, interrupt).start()

    t0 = time.time()
    reply = kernel.execute_interactive(code, timeout=120, output_hook=hook)["content"]
    print(f"interrupted cell took {time.time() - t0:.2f} s")
    # Stopped by the flag, not killed: the cell ended normally and printed its count.
    assert reply["status"] == "ok", reply
    stopped = [c["text"] for t, c in msgs if t == "stream" and "stopped after" in c["text"]]
    assert stopped and int(stopped[0].split()[2]) > 0, msgs
    reply, _ = run(kernel, "1 + 1")
    assert reply["status"] == "ok"


def test_interrupt_kills_a_cell_that_ignores_it(kernel):
    """A cell that never looks at the flag is stopped by killing its process after the grace
    period; the kernel then runs new cells."""
    msgs = []

    def hook(m):
        msgs.append((m["msg_type"], m["content"]))
        if m["msg_type"] == "stream" and "spinning" in m["content"].get("text", ""):
            threading.Timer(0.5, lambda: kernel.control_channel.send(kernel.session.msg("interrupt_request", {}))).start()

    code = 'println!("spinning"); loop { std::thread::sleep(std::time::Duration::from_millis(100)); }'
    reply = kernel.execute_interactive(code, timeout=120, output_hook=hook)["content"]
    assert reply["status"] == "error"
    reply, msgs2 = run(kernel, "use tunelab::prelude::*; 6 * 7")
    assert reply["status"] == "ok", reply


def test_interrupting_training_checkpoints_and_the_next_cell_resumes(kernel, tmp_path):
    """The method's training loop in a notebook: an interrupt stops it after the current step
    with a checkpoint; a following cell resumes from it and finishes."""
    out = tmp_path / "run"
    setup = (
        "use tunelab::prelude::*;\n"
        "let model = Model::load(\"SmolLM2-135M-Instruct.Q4_1.gguf\")?;\n"
        f"let data = Dataset::load(\"{ROOT}/examples/security-audit/train.jsonl\")?;\n"
        "let cfg = TrainConfig { max_steps: 40, batch_size: 1, cutoff_len: 192, learning_rate: 5e-4, ..TrainConfig::default() };"
    )
    reply, _ = run(kernel, setup)
    assert reply["status"] == "ok", reply
    msgs = []
    fired = []

    def hook(m):
        msgs.append((m["msg_type"], m["content"]))
        if m["msg_type"] == "update_display_data" and not fired:
            fired.append(True)
            kernel.control_channel.send(kernel.session.msg("interrupt_request", {}))

    code = f'let first = Trainer::new(&model, cfg.clone(), "{out}").run(&data, None, live_training(1))?;\nprintln!("status {{:?}} after {{}} steps", first.status, first.steps);'
    reply = kernel.execute_interactive(code, timeout=900, output_hook=hook)["content"]
    text = "".join(c.get("text", "") for t, c in msgs if t == "stream")
    assert reply["status"] == "ok", (reply.get("ename"), reply.get("evalue"), text[-2000:])
    assert "status Interrupted" in text, text
    steps = int(text.split(" after ")[1].split()[0])
    assert 0 < steps < 40
    assert (out / f"checkpoint-{steps}" / "trainer_state.json").exists()

    code = f'let second = Trainer::new(&model, cfg.clone(), "{out}").resume(true).run(&data, None, |_| {{}})?;\nprintln!("status {{:?}} after {{}} steps", second.status, second.steps);'
    reply, msgs = run(kernel, code, timeout=900)
    assert reply["status"] == "ok", reply
    text = "".join(c.get("text", "") for t, c in msgs if t == "stream")
    assert "status Completed after 40 steps" in text, text


def test_complete(kernel):
    run(kernel, "let tunelab_answer_value = 42u32;")
    code = "tunelab_answer_v"
    reply = kernel.complete(code, len(code), reply=True, timeout=120)["content"]
    assert reply["status"] == "ok"
    assert "tunelab_answer_value" in reply["matches"], reply
    assert reply["cursor_end"] == len(code)
