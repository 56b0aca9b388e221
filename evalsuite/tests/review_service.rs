//! The blind review service end to end over HTTP: a study from two stored runs, two
//! reviewers voting, blinding (every byte a reviewer receives is scanned for the runs'
//! identities), hostile requests, closing, and the results.

mod common;

use std::path::Path;

use common::{invite, new_study, review_runs, scratch, tunelab, Server};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

const RUN_A: &str = "zephyr-alpha-run";
const RUN_B: &str = "orion-beta-run";
const ADMIN: &str = "admin-secret-token-0123456789";

/// A reviewer's HTTP session that keeps every byte it receives (headers and bodies).
struct Session<'a> {
    client: &'a Client,
    base: &'a str,
    token: String,
    received: Vec<u8>,
}

impl Session<'_> {
    fn keep(&mut self, r: Response) -> (u16, Vec<u8>) {
        let status = r.status().as_u16();
        for (k, v) in r.headers() {
            self.received.extend_from_slice(k.as_str().as_bytes());
            self.received.extend_from_slice(v.as_bytes());
        }
        let body = r.bytes().unwrap().to_vec();
        self.received.extend_from_slice(&body);
        (status, body)
    }

    fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        let r = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().unwrap();
        self.keep(r)
    }

    fn post(&mut self, path: &str, body: &Value) -> (u16, Vec<u8>) {
        let r = self.client.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body).send().unwrap();
        self.keep(r)
    }

    fn json(&mut self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    fn vote(&mut self, task: &str, choice: &str, request_id: &str) -> (u16, Value) {
        let (status, body) = self.post("/api/vote", &json!({"task": task, "choice": choice, "request_id": request_id}));
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

fn study_setup(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = scratch(name);
    let a = |i: usize| format!("Answer from the first system to question {i}. <script>document.title='pwned'</script>");
    // Case 3's answer names its run: it must be left out of the study.
    let b = |i: usize| if i == 3 { format!("I am {RUN_B}, answering {i}.") } else { format!("The second system's answer {i}.") };
    let runs = review_runs(&dir, 12, &[(RUN_A, &a), (RUN_B, &b)]);
    let study = dir.join("study");
    let printed = new_study(&runs, &study, &["--reviewers-per-item", "2"]);
    assert!(printed.contains("11 items") && printed.contains("left out c3"), "{printed}");
    (dir, study)
}

fn identities(dir: &Path, study: &Path) -> Vec<String> {
    let key: Value = serde_json::from_slice(&std::fs::read(study.join("key.json")).unwrap()).unwrap();
    let mut words = vec![RUN_A.to_string(), RUN_B.to_string(), dir.display().to_string(), "predictions".into(), "key.json".into()];
    words.extend(key["systems"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()));
    let study_json: Value = serde_json::from_slice(&std::fs::read(study.join("study.json")).unwrap()).unwrap();
    words.push(study_json["seed"].to_string());
    words
}

#[test]
fn two_reviewers_vote_blind_and_the_results_count_their_latest_votes() {
    let (dir, study) = study_setup("review-service");
    let study_text = std::fs::read_to_string(study.join("study.json")).unwrap();
    assert!(!study_text.contains(RUN_A) && !study_text.contains(RUN_B), "study.json, which the server reads, names a run");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&study).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the study folder (key, tokens, votes) is the owner's alone: {mode:o}");
    }
    let server = Server::start(&["--study", study.to_str().unwrap()], Some(ADMIN));
    let client = Client::new();
    let (t1, t2) = (invite(&study, "ana"), invite(&study, "ben"));
    let mut ana = Session { client: &client, base: &server.base, token: t1, received: vec![] };
    let mut ben = Session { client: &client, base: &server.base, token: t2, received: vec![] };

    for path in ["/review", "/static/review.js", "/static/review.css", "/healthz", "/"] {
        assert_eq!(ana.get(path).0, 200, "{path}");
    }
    // Ana votes on everything: A (left) every time.
    let mut seen_tasks = Vec::new();
    loop {
        let next = ana.json("/api/next");
        if next["finished"] == true {
            assert_eq!(next["progress"], json!({"done": 11, "total": 11}));
            break;
        }
        // A reload (a second /api/next before voting) shows the same item.
        assert_eq!(ana.json("/api/next")["task"], next["task"]);
        assert!(next.get("prompt").is_some() && next.get("left").is_some() && next.get("right").is_some());
        assert_eq!(next["reference"], Value::Null, "the study does not show references");
        let task = next["task"].as_str().unwrap().to_string();
        let (status, ack) = ana.vote(&task, "left", &format!("ana-{}", seen_tasks.len()));
        assert_eq!(status, 200, "{ack}");
        seen_tasks.push(task);
    }
    assert_eq!(seen_tasks.len(), 11);
    // Ana changes her first vote to a tie; the history is kept, the latest counts.
    let first = seen_tasks[0].clone();
    assert_eq!(ana.vote(&first, "tie", "ana-change").0, 200);
    let history = ana.json("/api/history");
    assert_eq!(history["tasks"].as_array().unwrap().len(), 11);
    assert_eq!(ana.json(&format!("/api/task/{first}"))["choice"], "tie");
    // A replayed request id is acknowledged once, not counted again; the same id for
    // another vote is refused (acknowledging it would claim a vote never stored).
    let (status, ack) = ana.vote(&first, "tie", "ana-change");
    assert_eq!((status, ack["replayed"].clone()), (200, json!(true)));
    let (status, ack) = ana.vote(&first, "right", "ana-change");
    assert_eq!(status, 409, "{ack}");
    assert_eq!(ana.json(&format!("/api/task/{first}"))["choice"], "tie");

    // Ben votes too: his sides are his own; he prefers the first system's answer.
    let (mut ben_votes, mut ben_left) = (0, 0);
    loop {
        let next = ben.json("/api/next");
        if next["finished"] == true {
            break;
        }
        let left_is_first_system = next["left"].as_str().unwrap().starts_with("Answer from the first system");
        let choice = if left_is_first_system { "left" } else { "right" };
        ben_left += usize::from(left_is_first_system);
        assert_eq!(ben.vote(next["task"].as_str().unwrap(), choice, &format!("ben-{ben_votes}")).0, 200);
        ben_votes += 1;
    }
    assert_eq!(ben_votes, 11);

    // A third reviewer finds nothing open (two reviewers per item) and cannot vote on an item.
    let mut cai = Session { client: &client, base: &server.base, token: invite(&study, "cai"), received: vec![] };
    assert_eq!(cai.json("/api/next")["finished"], true);
    let (status, body) = cai.vote(&first, "left", "cai-1");
    assert_eq!(status, 403, "{body}");

    // Hostile requests: refused with 4xx, nothing written.
    let anonymous = client.get(format!("{}/api/next", server.base)).send().unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert!(!anonymous.text().unwrap().contains("Question"), "a request without a token got study text");
    let forged = client.get(format!("{}/api/next", server.base)).bearer_auth("0".repeat(64)).send().unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    assert_eq!(ana.vote("t0000000000000000", "left", "ana-x").0, 404, "unknown item");
    for path in ["/api/task/..%2F..%2Fkey.json", "/api/task/../../key.json", "/static/..%2Fkey.json", "/key.json", "/study.json", "/review.db"] {
        let (status, body) = ana.get(path);
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert!(!String::from_utf8_lossy(&body).contains("systems"), "{path} served study data");
    }
    let (status, _) = ana.post("/api/vote", &json!({"task": first, "choice": "left", "comment": "x".repeat(20_000)}));
    assert_eq!(status, 413, "oversized body");
    let (status, _) = ana.post("/api/vote", &json!({"task": first, "choice": "left", "comment": "y".repeat(2001)}));
    assert_eq!(status, 400, "comment too long");
    let r =
        client.post(format!("{}/api/vote", server.base)).bearer_auth(&ana.token).header("content-type", "application/json").body("{\"task\": ").send().unwrap();
    assert_eq!(ana.keep(r).0, 400, "malformed JSON");
    assert_eq!(ana.vote(&first, "left; DROP TABLE votes", "ana-y").0, 400, "bad choice");
    assert_eq!(ana.vote(&first, "left", "../../etc").0, 400, "bad request id");

    // Admin endpoints need the admin token; with it, results, naming the runs only once the
    // study is closed.
    assert_eq!(ana.get(&format!("/api/admin/results?study={}", "study")).0, 401, "a reviewer token is not an admin token");
    let admin_results = || -> Value { client.get(format!("{}/api/admin/results?study=study", server.base)).bearer_auth(ADMIN).send().unwrap().json().unwrap() };
    let open = admin_results();
    assert_eq!(open["unblinded"], false);
    let open_text = open.to_string();
    assert!(!open_text.contains(RUN_A) && !open_text.contains(RUN_B), "results name runs while the study is open");
    assert_eq!(open["results"]["votes"], 22);

    // Close: every later vote, replayed or new, is refused; admins now see the runs' names.
    assert!(tunelab(&["review", "close", study.to_str().unwrap()]).status.success());
    let closed = admin_results();
    assert_eq!((closed["unblinded"].clone(), closed["results"]["runs"].clone()), (json!(true), json!([RUN_A, RUN_B])));
    assert_eq!(ana.vote(&first, "left", "ana-change").0, 409, "replayed after close");
    assert_eq!(ana.vote(&first, "left", "ana-after").0, 409);
    let late = tunelab(&["review", "invite", study.to_str().unwrap(), "--reviewer", "late"]);
    assert!(!late.status.success() && String::from_utf8_lossy(&late.stderr).contains("closed"), "a closed study takes no new reviewers");
    assert_eq!(ana.json("/api/next")["closed"], true);

    // Blinding: nothing any reviewer received names a run, the systems' ids, the study's
    // files or its seed.
    for session in [&ana, &ben, &cai] {
        let text = String::from_utf8_lossy(&session.received);
        for word in identities(&dir, &study) {
            assert!(!text.contains(&word), "a reviewer received {word:?}");
        }
    }

    // Results: 22 latest votes (ana's first is a tie); ben always preferred RUN_A; ana
    // always chose the left side.
    let out = tunelab(&["review", "results", study.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["votes"], 22);
    assert_eq!(r["reviewers"], 2);
    let all = r["pairs"].as_array().unwrap().iter().find(|p| p["category"] == "all").unwrap().clone();
    let a_wins = all["a_wins"]["k"].as_u64().unwrap();
    let ties = all["ties"]["k"].as_u64().unwrap();
    assert_eq!(ties, 1);
    assert!(a_wins >= 11, "ben's 11 votes all prefer {RUN_A}: {all}");
    // Position bias: ana's ten remaining "left" votes and ben's left choices, of 21 decisive.
    assert_eq!((r["left_share"]["k"].as_u64().unwrap(), r["left_share"]["n"].as_u64().unwrap()), (10 + ben_left as u64, 21));
    assert!(r["ratings"][0]["rating"].as_f64().unwrap() > r["ratings"][1]["rating"].as_f64().unwrap());
    assert_eq!(r["kappas"].as_array().unwrap().len(), 1);
    assert_eq!(r["kappas"][0]["shared"], 11);
    let text = String::from_utf8(tunelab(&["review", "results", study.to_str().unwrap()]).stdout).unwrap();
    for needle in ["win rates", "Bradley–Terry", "Krippendorff's alpha", "Cohen's kappa ana / ben", "position bias", RUN_A, RUN_B] {
        assert!(text.contains(needle), "results text lacks {needle}:\n{text}");
    }

    // The results are a section of the comparison report (HTML and Markdown).
    for (format, file) in [("html", "report.html"), ("md", "report.md")] {
        let page = dir.join(file);
        let (a, b) = (dir.join(RUN_A), dir.join(RUN_B));
        let out = tunelab(&[
            "eval",
            "report",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--review",
            study.to_str().unwrap(),
            "--format",
            format,
            "--out",
            page.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let page = std::fs::read_to_string(page).unwrap();
        for needle in ["Blind review: study", "Bradley–Terry", "Krippendorff", "Cohen", "22 votes from 2 reviewers"] {
            assert!(page.contains(needle), "{format} report lacks {needle}");
        }
    }
}

#[test]
fn admins_browse_runs_and_nothing_outside_the_runs_folder() {
    let (dir, study) = study_setup("review-admin");
    let server = Server::start(&["--study", study.to_str().unwrap(), "--runs", dir.to_str().unwrap()], Some(ADMIN));
    let client = Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = client.get(format!("{}{path}", server.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(get("/api/admin/runs", None).0, 401);
    assert_eq!(get("/api/admin/runs", Some("wrong-token-wrong-token")).0, 401);
    let (status, body) = get("/api/admin/runs", Some(ADMIN));
    assert_eq!(status, 200);
    let runs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runs["runs"], json!([RUN_B, RUN_A]));
    let (status, body) = get(&format!("/api/admin/runs/{RUN_A}"), Some(ADMIN));
    assert!(status == 200 && body.contains("seen"), "{status} {body}");
    for hostile in ["..", "..%2F..%2Fetc", "study", ".hidden", "%2Fetc%2Fpasswd"] {
        let (status, body) = get(&format!("/api/admin/runs/{hostile}"), Some(ADMIN));
        assert_eq!(status, 404, "{hostile}: {body}");
    }
    let (status, body) = get(&format!("/api/admin/compare?baseline={RUN_A}&candidate={RUN_B}"), Some(ADMIN));
    assert!(status == 200 && body.contains("seen") && body.contains(RUN_B), "{status} {body}");
    assert_eq!(get(&format!("/api/admin/compare?baseline=..&candidate={RUN_B}"), Some(ADMIN)).0, 404);
    assert_eq!(get(&format!("/api/admin/compare?baseline={RUN_A}&candidate={RUN_B}"), None).0, 401);
    assert_eq!(get("/admin", None).0, 200, "the sign-in page itself is public");
    assert_eq!(get("/api/admin/studies", Some(ADMIN)).0, 200);
}

#[test]
fn more_than_two_runs_are_paired_so_every_pair_is_covered() {
    let dir = scratch("review-three");
    let answer = |k: usize| move |i: usize| format!("system {k} answer {i}");
    let (a, b, c) = (answer(0), answer(1), answer(2));
    let runs = review_runs(&dir, 9, &[("run-x", &a), ("run-y", &b), ("run-z", &c)]);
    let study = dir.join("study");
    new_study(&runs, &study, &["--sample", "6", "--seed", "3"]);
    let s: Value = serde_json::from_slice(&std::fs::read(study.join("study.json")).unwrap()).unwrap();
    assert_eq!(s["items"].as_array().unwrap().len(), 6, "--sample 6");
    let mut pairs: Vec<String> = s["tasks"].as_array().unwrap().iter().map(|t| t["pair"].to_string()).collect();
    pairs.sort();
    assert_eq!(pairs, ["[0,1]", "[0,1]", "[0,2]", "[0,2]", "[1,2]", "[1,2]"], "each of the three pairs twice");
}

#[test]
fn a_study_refuses_runs_it_cannot_pair() {
    let dir = scratch("review-refusals");
    let a = |i: usize| format!("answer {i}");
    let runs = review_runs(&dir, 4, &[("one", &a)]);
    let out = tunelab(&["review", "new", "--runs", runs[0].to_str().unwrap(), runs[0].to_str().unwrap(), "--out", dir.join("s").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("two runs are named one"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tunelab(&["review", "new", "--runs", runs[0].to_str().unwrap(), dir.join("missing").to_str().unwrap(), "--out", dir.join("s").to_str().unwrap()]);
    assert!(!out.status.success() && !dir.join("s").exists());
}
