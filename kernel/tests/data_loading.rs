//! Dataset files: formats, line numbers in every error, encodings, duplicates, overlap,
//! splits, and column mappings — no record is silently dropped.

mod common;

use std::path::PathBuf;

use tunelab::data::{Columns, Dataset, DatasetFormat, LoadOptions, SplitSpec, ValidationOptions, ValidationReport};
use tunelab::Role;

fn write(name: &str, content: &[u8]) -> PathBuf {
    let dir = common::scratch_dir("data");
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn report(ds: &Dataset, eval: Option<&Dataset>) -> ValidationReport {
    ValidationReport::build(ds, eval, None, &ValidationOptions::default()).unwrap()
}

#[test]
fn jsonl_errors_name_line_and_field() {
    let p = write(
        "bad.jsonl",
        br#"{"instruction": "Say hi", "output": "hi"}
{"instruction": "Broken", "output": 
{"instruction": "No output"}
{"instruction": 42, "output": "x"}

{"instruction": "Empty", "output": "   "}
["not", "an", "object"]
{"instruction": "Fine", "input": "ctx", "output": "ok", "system": "Be terse.", "history": [["q1", "a1"]]}
"#,
    );
    let ds = Dataset::load(&p).unwrap();
    assert_eq!(ds.examples.len(), 2);
    let msgs: Vec<String> = ds.issues.iter().map(|i| i.to_string()).collect();
    let has = |line: usize, text: &str| msgs.iter().any(|m| m.contains(&format!("bad.jsonl:{line}:")) && m.contains(text));
    assert!(has(2, "invalid JSON"), "{msgs:#?}");
    assert!(has(3, "field `output` missing field"), "{msgs:#?}");
    assert!(has(4, "field `instruction` expected a string, found a number"), "{msgs:#?}");
    assert!(has(6, "field `output` is empty"), "{msgs:#?}");
    assert!(has(7, "expected a JSON object, found a list"), "{msgs:#?}");
    let last = &ds.examples[1];
    assert_eq!(last.source.line, 8);
    let roles: Vec<Role> = last.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::User, Role::Assistant]);
    assert_eq!(last.messages[3].content, "Fine\nctx", "instruction and input joined like LLaMA-Factory");
    assert_eq!(report(&ds, None).error_count(), 5);
}

#[test]
fn json_array_records_know_their_lines() {
    let p = write(
        "arr.json",
        b"[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n\n  {\"instruction\": \"c\"},\n  {\"instruction\": \"d\", \"output\": \"e\"}\n]\n",
    );
    let ds = Dataset::load(&p).unwrap();
    assert_eq!(ds.examples.iter().map(|e| e.source.line).collect::<Vec<_>>(), vec![2, 5]);
    assert_eq!(ds.issues[0].source.line, 4);
    let broken = write("broken.json", b"[\n {\"instruction\": \"a\", \"output\": \"b\"},\n {oops}\n]");
    let e = Dataset::load(&broken).unwrap_err().to_string();
    assert!(e.contains("broken.json:3:"), "{e}");
}

#[test]
fn sharegpt_openai_and_csv() {
    let p = write(
        "chat.jsonl",
        br#"{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
{"messages": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}
{"messages": [{"role": "assistant", "content": "A"}, {"role": "user", "content": "Q"}]}
{"conversations": [{"from": "human", "value": "Q"}, {"from": "robot", "value": "A"}]}
"#,
    );
    let ds = Dataset::load(&p).unwrap();
    assert_eq!(ds.examples.len(), 2);
    assert_eq!(ds.examples[0].messages[0].role, Role::System);
    let msgs: Vec<String> = ds.issues.iter().map(|i| i.to_string()).collect();
    assert!(msgs[0].contains(":3:") && msgs[0].contains("wrong role order"), "{msgs:?}");
    assert!(msgs[1].contains(":4:") && msgs[1].contains("unknown role \"robot\""), "{msgs:?}");

    let csv = write("d.csv", "instruction,input,output\nTranslate,bonjour,hello\n\"Multi\nline\",,\"yes, \"\"quoted\"\"\"\nShort,row\n".as_bytes());
    let ds = Dataset::load(&csv).unwrap();
    assert_eq!(ds.examples.len(), 2);
    assert_eq!(ds.examples[1].messages[0].content, "Multi\nline");
    assert_eq!(ds.examples[1].messages[1].content, "yes, \"quoted\"");
    assert_eq!(ds.examples[1].source.line, 3);
    assert!(ds.issues[0].to_string().contains("d.csv:5:"), "{}", ds.issues[0]);

    let custom = write("custom.jsonl", br#"{"question": "Q", "answer": "A"}"#);
    let opts = LoadOptions {
        format: DatasetFormat::Alpaca,
        columns: Columns { prompt: "question".into(), response: "answer".into(), ..Columns::default() },
        ..Default::default()
    };
    let ds = Dataset::load_with(&custom, &opts).unwrap();
    assert_eq!(ds.examples.len(), 1);
    assert_eq!(ds.examples[0].messages[1].content, "A");
}

#[test]
fn encodings_are_checked() {
    let mut bytes = b"{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"caf".to_vec();
    bytes.extend_from_slice(&[0xE9, b'"', b'}']);
    let e = Dataset::load(write("latin1.jsonl", &bytes)).unwrap_err().to_string();
    assert!(e.contains("latin1.jsonl:2:") && e.contains("invalid UTF-8"), "{e}");
    let e = Dataset::load(write("utf16.jsonl", &[0xFF, 0xFE, b'{', 0])).unwrap_err().to_string();
    assert!(e.contains("UTF-16"), "{e}");
    let bom = [&[0xEF, 0xBB, 0xBF][..], b"{\"instruction\": \"a\", \"output\": \"b\"}\n"].concat();
    assert_eq!(Dataset::load(write("bom.jsonl", &bom)).unwrap().examples.len(), 1);
}

#[test]
fn duplicates_near_duplicates_and_overlap() {
    let p = write(
        "dups.jsonl",
        br#"{"instruction": "Explain recursion with an example.", "output": "A function calling itself."}
{"instruction": "Explain recursion with an example.", "output": "A function calling itself."}
{"instruction": "explain   RECURSION, with an example!", "output": "A function calling itself"}
{"instruction": "What is a closure in JavaScript programming and why use one", "output": "A function bundled with its lexical environment so it can use outer variables later on."}
{"instruction": "What is a closure in JavaScript programming and why use one?", "output": "A function bundled with its lexical environment so it can use outer variables later."}
{"instruction": "Name a prime number.", "output": "7"}
"#,
    );
    let eval = write("eval.jsonl", br#"{"instruction": "Name a PRIME number", "output": "11"}"#);
    let ds = Dataset::load(&p).unwrap();
    let ev = Dataset::load(&eval).unwrap();
    let r = report(&ds, Some(&ev));
    assert_eq!((r.exact_duplicates, r.near_duplicates, r.eval_overlap), (1, 2, 1), "{}", r.render_text());
    let text = r.render_text();
    assert!(text.contains("dups.jsonl:2: error: exact duplicate of record 1 (line 1)"), "{text}");
    assert!(text.contains("dups.jsonl:3: warning: near-duplicate of record 1 (line 1;"), "{text}");
    assert!(text.contains("dups.jsonl:5: warning: near-duplicate of record 4 (line 4; word-trigram Jaccard"), "{text}");
    assert!(text.contains("dups.jsonl:6: error: prompt also appears in the evaluation data at"), "{text}");
    assert_eq!(r.error_records().into_iter().collect::<std::collections::BTreeSet<_>>(), [2, 6].into());
}

#[test]
fn minified_arrays_locate_records_by_column_and_index() {
    // Three records on one line: one valid, one missing its output, one not an object.
    let p = write("mini.json", br#"[{"instruction": "ok", "output": "fine"},{"instruction": "no output"},  [1]]"#);
    let ds = Dataset::load(&p).unwrap();
    let r = report(&ds, None);
    assert_eq!((r.records, r.valid), (3, 1), "{}", r.render_text());
    assert_eq!(ds.examples[0].source.record, 1);
    let text = r.render_text();
    assert!(text.contains("mini.json:1:42 (record 2): error"), "{text}");
    assert!(text.contains("mini.json:1:73 (record 3): error"), "{text}");
    assert_eq!(r.error_records().into_iter().collect::<std::collections::BTreeSet<_>>(), [2, 3].into());
    // A pretty-printed array keeps plain file:line positions.
    let p = write("pretty.json", b"[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n  {\"instruction\": \"c\"}\n]\n");
    let text = report(&Dataset::load(&p).unwrap(), None).render_text();
    assert!(text.contains("pretty.json:3: error"), "{text}");
    // Columns restart on each line (records 2 and 3 share line 2; record 2 is the error).
    let p = write("mixed.json", b"[{\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": \"x\"}, {\"instruction\": \"y\", \"output\": \"z\"}]");
    let ds = Dataset::load(&p).unwrap();
    assert_eq!(ds.examples.iter().map(|e| (e.source.line, e.source.column)).collect::<Vec<_>>(), [(1, None), (2, Some(24))]);
    assert!(report(&ds, None).render_text().contains("mixed.json:2:2 (record 2): error"));
}

#[test]
fn empty_and_blank_files_are_errors() {
    for (name, content) in [("empty.jsonl", &b""[..]), ("blank.jsonl", b"  \n\n \n"), ("empty.json", b"[]")] {
        let r = report(&Dataset::load(write(name, content)).unwrap(), None);
        assert!(r.has_errors() && r.render_text().contains("holds no records"), "{name}: {}", r.render_text());
    }
}

#[test]
fn near_duplicates_found_among_many_records() {
    // 3 000 distinct records plus a reworded copy of record 1 500 at the end: found through
    // the min-hash index, with the exact Jaccard in the message.
    let words = |i: usize| (0..60).map(|k| format!("w{}", ((i * 60 + k) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44)).collect::<Vec<_>>().join(" ");
    let mut lines: String = (0..3000).map(|i| format!("{{\"instruction\": \"{}\", \"output\": \"r{i}\"}}\n", words(i))).collect();
    let copy = words(1500);
    lines.push_str(&format!("{{\"instruction\": \"{copy} extra\", \"output\": \"r1500\"}}\n"));
    let r = report(&Dataset::load(write("many.jsonl", lines.as_bytes())).unwrap(), None);
    assert_eq!(r.near_duplicates, 1, "{}", r.render_text());
    assert!(r.render_text().contains("many.jsonl:3001: warning: near-duplicate of record 1501"), "{}", r.render_text());
}

#[test]
fn splits_are_seeded_disjoint_and_complete() {
    let lines: String = (0..50).map(|i| format!("{{\"instruction\": \"task {i}\", \"output\": \"answer {i}\", \"id\": \"c{i}\"}}\n")).collect();
    let ds = Dataset::load(write("s.jsonl", lines.as_bytes())).unwrap();
    let (a, b) = ds.split(7, SplitSpec::Fraction(0.2)).unwrap();
    let (a2, b2) = ds.split(7, SplitSpec::Fraction(0.2)).unwrap();
    let (_, b3) = ds.split(8, SplitSpec::Fraction(0.2)).unwrap();
    let ids = |d: &Dataset| d.examples.iter().map(|e| e.id.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!((a.len(), b.len()), (40, 10));
    assert_eq!((ids(&a), ids(&b)), (ids(&a2), ids(&b2)), "same seed, same split");
    assert_ne!(ids(&b), ids(&b3), "another seed, another split");
    let mut all = [ids(&a), ids(&b)].concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 50);
    let out = common::scratch_dir("split").join("held.jsonl");
    b.save_jsonl(&out).unwrap();
    let back = Dataset::load(&out).unwrap();
    assert_eq!(ids(&back), ids(&b), "records are written back with all their fields");
    assert!(ds.split(1, SplitSpec::Count(50)).is_err());
}

/// Prompt-only loading (for prompts a model will answer): records without a response load
/// as conversations ending with the user's turn; the default still refuses them.
#[test]
fn prompts_only_loading_accepts_records_without_a_response() {
    let dir = std::env::temp_dir().join(format!("tunelab-prompts-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prompts.jsonl");
    std::fs::write(&path, "{\"instruction\": \"Say hi.\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"Hello?\"}]}\n").unwrap();
    let strict = Dataset::load(&path).unwrap();
    assert_eq!((strict.len(), strict.issues.len()), (0, 2));
    let prompts = Dataset::load_with(&path, &LoadOptions { prompts_only: true, ..Default::default() }).unwrap();
    assert_eq!((prompts.len(), prompts.issues.len()), (2, 0));
    assert!(prompts.examples.iter().all(|e| e.messages.last().unwrap().role == Role::User));
    std::fs::remove_dir_all(&dir).ok();
}
