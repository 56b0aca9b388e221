//! The review service (axum): the review page and its JSON API for reviewers (each request
//! carries the reviewer's token as `Authorization: Bearer …`), admin-only results (with the
//! runs' names only once the study is closed: the service reads the key, `key.json`, for
//! nothing else) and a read-only browser of runs (summaries, and the comparison report of
//! any two as Markdown), and `GET /healthz`.
//!
//! Blinding: nothing served to a reviewer names a run, model, adapter or the side mapping —
//! answers are served as `left` and `right` only, the task ids are random, and errors are
//! fixed sentences. Every response carries a strict Content-Security-Policy (scripts and
//! styles from this server only), and the page inserts all study text as text nodes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::results::{blinded_study_results, study_results, ReviewResults};
use super::store::{Choice, Next, Refusal, Store};
use super::study::Study;
use super::token::{self, TokenHash};
use crate::error::{Error, Result};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest comment kept with a vote, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

const PAGE: &str = include_str!("page/review.html");
const SCRIPT: &str = include_str!("page/review.js");
const STYLE: &str = include_str!("page/review.css");
const ADMIN_PAGE: &str = include_str!("page/admin.html");
const ADMIN_SCRIPT: &str = include_str!("page/admin.js");
const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// One open study.
struct StudyHandle {
    dir: PathBuf,
    study: Study,
    index: HashMap<String, usize>,
    store: Mutex<Store>,
}

/// What the service serves.
pub struct ServiceState {
    studies: Vec<StudyHandle>,
    runs: Option<PathBuf>,
    admin: Option<TokenHash>,
    on_error: Box<dyn Fn(&Error) + Send + Sync>,
}

impl ServiceState {
    /// Opens each study directory (its `study.json` and `review.db`; never its key). `runs`
    /// is the folder of run directories admins may browse; `admin` the hash of the admin
    /// token (without one, the admin endpoints refuse every request); `on_error` hears of
    /// failures the clients get only a generic 500 for.
    pub fn open(study_dirs: &[PathBuf], runs: Option<PathBuf>, admin: Option<TokenHash>, on_error: Box<dyn Fn(&Error) + Send + Sync>) -> Result<Self> {
        let mut studies = Vec::new();
        for dir in study_dirs {
            let study = Study::read(dir)?;
            if studies.iter().any(|s: &StudyHandle| s.study.name == study.name) {
                return Err(Error::Invalid(format!("two studies are named {}", study.name)));
            }
            let index = study.tasks.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();
            studies.push(StudyHandle { dir: dir.clone(), store: Mutex::new(Store::open(dir)?), study, index });
        }
        Ok(Self { studies, runs, admin, on_error })
    }
}

/// The service's routes.
pub fn router(state: Arc<ServiceState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/", get(|| async { Html("<!doctype html><meta charset=utf-8><title>Review</title><p>Open the review link you were given.</p>") }))
        .route("/review", get(|| async { Html(PAGE) }))
        .route("/admin", get(|| async { Html(ADMIN_PAGE) }))
        .route("/static/review.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT) }))
        .route("/static/admin.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], ADMIN_SCRIPT) }))
        .route("/static/review.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }))
        .route("/api/next", get(next))
        .route("/api/task/{id}", get(task))
        .route("/api/history", get(history))
        .route("/api/vote", post(vote))
        .route("/api/admin/studies", get(admin_studies))
        .route("/api/admin/results", get(admin_results))
        .route("/api/admin/runs", get(admin_runs))
        .route("/api/admin/runs/{name}", get(admin_run))
        .route("/api/admin/compare", get(admin_compare))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "not found") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(state)
}

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

/// A JSON error with a fixed message.
fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A refused request: a status and a fixed sentence (never text from the study or the
/// request).
#[derive(Debug, Clone, Copy)]
pub struct ApiError {
    status: StatusCode,
    message: &'static str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        refuse(self.status, self.message)
    }
}

fn reject(status: StatusCode, message: &'static str) -> ApiError {
    ApiError { status, message }
}

/// What the handlers return.
type Reply = std::result::Result<Response, ApiError>;

/// An internal failure: reported to the service's error sink (the binary prints it); the
/// client gets a fixed sentence that reveals nothing of the study.
fn internal(state: &ServiceState, e: Error) -> ApiError {
    (state.on_error)(&e);
    reject(StatusCode::INTERNAL_SERVER_ERROR, "the server could not complete this request; try again")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty() && token.len() <= 256).then_some(token)
}

/// The study and reviewer a token belongs to.
fn reviewer(state: &ServiceState, headers: &HeaderMap) -> std::result::Result<(usize, i64), ApiError> {
    let unauthorized = || reject(StatusCode::UNAUTHORIZED, "a valid review link is needed");
    let token = bearer(headers).ok_or_else(unauthorized)?;
    let mut found = None;
    for (s, handle) in state.studies.iter().enumerate() {
        let reviewers = handle.store.lock().unwrap_or_else(|p| p.into_inner()).reviewers().map_err(|e| internal(state, e))?;
        let known: Vec<(i64, TokenHash)> = reviewers.iter().map(|r| (r.id, r.token_hash)).collect();
        if let Some(id) = token::find(token, &known) {
            found = Some((s, id));
        }
    }
    found.ok_or_else(unauthorized)
}

fn admin(state: &ServiceState, headers: &HeaderMap) -> std::result::Result<(), ApiError> {
    let unauthorized = || reject(StatusCode::UNAUTHORIZED, "the admin token is needed");
    let (Some(expected), Some(token)) = (state.admin.as_ref(), bearer(headers)) else { return Err(unauthorized()) };
    if token::equal(&token::hash(token), expected) {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::result::Result<T, ApiError> + Send + 'static) -> std::result::Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(reject(StatusCode::INTERNAL_SERVER_ERROR, "the server could not complete this request; try again")))
}

/// A task as a reviewer sees it: prompt, reference (when shown), the two answers in this
/// reviewer's order, their current choice, progress.
fn task_view(handle: &StudyHandle, reviewer: i64, t: usize, choice: Option<Choice>, progress: super::store::Progress, closed: bool) -> Value {
    let task = &handle.study.tasks[t];
    let item = &handle.study.items[task.item];
    let [left, right] = super::store::sides(&handle.study, reviewer, task);
    json!({
        "task": task.id,
        "prompt": item.prompt,
        "reference": handle.study.show_reference.then_some(&item.reference),
        "left": item.answers[left],
        "right": item.answers[right],
        "choice": choice.map(Choice::as_str),
        "progress": progress,
        "closed": closed,
    })
}

async fn next(State(state): State<Arc<ServiceState>>, headers: HeaderMap) -> Reply {
    let (s, who) = reviewer(&state, &headers)?;
    blocking(move || {
        let handle = &state.studies[s];
        let mut store = handle.store.lock().unwrap_or_else(|p| p.into_inner());
        let closed = store.closed_at().map_err(|e| internal(&state, e))?.is_some();
        if closed {
            let progress = store.progress(&handle.study, who, now_ms()).map_err(|e| internal(&state, e))?;
            return Ok(Json(json!({ "finished": true, "closed": true, "progress": progress })).into_response());
        }
        let (next, progress) = store.next_task(&handle.study, who, now_ms()).map_err(|e| internal(&state, e))?;
        Ok(match next {
            Next::Task(t) => Json(task_view(handle, who, t, None, progress, false)).into_response(),
            Next::Finished => Json(json!({ "finished": true, "closed": false, "progress": progress })).into_response(),
        })
    })
    .await
}

async fn task(State(state): State<Arc<ServiceState>>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Reply {
    let (s, who) = reviewer(&state, &headers)?;
    blocking(move || {
        let handle = &state.studies[s];
        let Some(&t) = handle.index.get(&id) else { return Err(reject(StatusCode::NOT_FOUND, "no such item")) };
        let mut store = handle.store.lock().unwrap_or_else(|p| p.into_inner());
        let history = store.history(&handle.study, who).map_err(|e| internal(&state, e))?;
        let Some(&(_, choice)) = history.iter().find(|(h, _)| *h == t) else { return Err(reject(StatusCode::NOT_FOUND, "no such item")) };
        let progress = store.progress(&handle.study, who, now_ms()).map_err(|e| internal(&state, e))?;
        let closed = store.closed_at().map_err(|e| internal(&state, e))?.is_some();
        Ok(Json(task_view(handle, who, t, Some(choice), progress, closed)).into_response())
    })
    .await
}

async fn history(State(state): State<Arc<ServiceState>>, headers: HeaderMap) -> Reply {
    let (s, who) = reviewer(&state, &headers)?;
    blocking(move || {
        let handle = &state.studies[s];
        let store = handle.store.lock().unwrap_or_else(|p| p.into_inner());
        let history = store.history(&handle.study, who).map_err(|e| internal(&state, e))?;
        let tasks: Vec<Value> = history.iter().map(|(t, c)| json!({ "task": handle.study.tasks[*t].id, "choice": c.as_str() })).collect();
        Ok(Json(json!({ "tasks": tasks })).into_response())
    })
    .await
}

/// A vote as posted by the page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    task: String,
    choice: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    request_id: Option<String>,
}

async fn vote(State(state): State<Arc<ServiceState>>, headers: HeaderMap, body: std::result::Result<Json<VoteBody>, JsonRejection>) -> Reply {
    let (s, who) = reviewer(&state, &headers)?;
    let body = match body {
        Ok(Json(b)) => b,
        Err(JsonRejection::BytesRejection(_)) => return Err(reject(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large")),
        Err(JsonRejection::MissingJsonContentType(_)) => return Err(reject(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the vote as application/json")),
        Err(_) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "the vote must be JSON with task, choice (left, right, tie or both_bad), an optional comment and request_id",
            ))
        }
    };
    let Some(choice) = Choice::parse(&body.choice) else { return Err(reject(StatusCode::BAD_REQUEST, "choice must be left, right, tie or both_bad")) };
    if body.comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(reject(StatusCode::BAD_REQUEST, "the comment is too long (2000 characters at most)"));
    }
    if let Some(rid) = &body.request_id {
        if rid.is_empty() || rid.len() > 64 || !rid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(reject(StatusCode::BAD_REQUEST, "request_id must be 1-64 letters, digits, '-' or '_'"));
        }
    }
    blocking(move || {
        let handle = &state.studies[s];
        let Some(&t) = handle.index.get(&body.task) else { return Err(reject(StatusCode::NOT_FOUND, "no such item")) };
        let mut store = handle.store.lock().unwrap_or_else(|p| p.into_inner());
        let at = crate::run::now_utc().1;
        let outcome =
            store.record_vote(&handle.study, who, t, choice, &body.comment, body.request_id.as_deref(), now_ms(), &at).map_err(|e| internal(&state, e))?;
        match outcome {
            Ok(ack) => {
                let progress = store.progress(&handle.study, who, now_ms()).map_err(|e| internal(&state, e))?;
                Ok(Json(json!({ "ok": true, "replayed": ack.replayed, "progress": progress })).into_response())
            }
            Err(Refusal::Closed) => Err(reject(StatusCode::CONFLICT, "this study is closed; votes are no longer accepted")),
            Err(Refusal::NotAvailable) => Err(reject(StatusCode::FORBIDDEN, "this item is not assigned to you")),
            Err(Refusal::RequestIdReused) => Err(reject(StatusCode::CONFLICT, "this request id was used for another vote; send a new one")),
        }
    })
    .await
}

async fn admin_studies(State(state): State<Arc<ServiceState>>, headers: HeaderMap) -> Reply {
    admin(&state, &headers)?;
    let studies: Vec<Value> =
        state.studies.iter().map(|h| json!({ "name": h.study.name, "tasks": h.study.tasks.len(), "created_at": h.study.created_at })).collect();
    Ok(Json(json!({ "studies": studies })).into_response())
}

#[derive(Deserialize)]
struct StudyQuery {
    study: String,
}

async fn admin_results(State(state): State<Arc<ServiceState>>, headers: HeaderMap, Query(q): Query<StudyQuery>) -> Reply {
    admin(&state, &headers)?;
    blocking(move || {
        let Some(handle) = state.studies.iter().find(|h| h.study.name == q.study) else { return Err(reject(StatusCode::NOT_FOUND, "no such study")) };
        // The key is read only once voting has ended: while the study is open, even admins
        // see the systems under their opaque ids.
        let closed = handle.store.lock().unwrap_or_else(|p| p.into_inner()).closed_at().map_err(|e| internal(&state, e))?.is_some();
        let results: ReviewResults = if closed { study_results(&handle.dir) } else { blinded_study_results(&handle.dir) }.map_err(|e| internal(&state, e))?;
        Ok(Json(json!({ "unblinded": closed, "results": results })).into_response())
    })
    .await
}

/// A run directory's name, if it is a plain child of the runs folder holding a run.
fn run_dir(root: &Path, name: &str) -> Option<PathBuf> {
    let plain = !name.is_empty() && name.len() <= 255 && !name.starts_with('.') && !name.contains(['/', '\\', '\0']);
    let dir = root.join(name);
    (plain && dir.join(crate::run::store::RUN_FILE).is_file()).then_some(dir)
}

async fn admin_runs(State(state): State<Arc<ServiceState>>, headers: HeaderMap) -> Reply {
    admin(&state, &headers)?;
    let Some(root) = state.runs.clone() else { return Err(reject(StatusCode::NOT_FOUND, "the service was started without --runs")) };
    blocking(move || {
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .map_err(|_| reject(StatusCode::INTERNAL_SERVER_ERROR, "the runs folder cannot be read"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| run_dir(&root, n).is_some())
            .collect();
        names.sort();
        Ok(Json(json!({ "runs": names })).into_response())
    })
    .await
}

async fn admin_run(State(state): State<Arc<ServiceState>>, headers: HeaderMap, UrlPath(name): UrlPath<String>) -> Reply {
    admin(&state, &headers)?;
    let Some(root) = state.runs.clone() else { return Err(reject(StatusCode::NOT_FOUND, "the service was started without --runs")) };
    blocking(move || {
        let Some(dir) = run_dir(&root, &name) else { return Err(reject(StatusCode::NOT_FOUND, "no such run")) };
        let summary = crate::run::summary::summarize(&dir).map_err(|e| internal(&state, e))?;
        Ok(Json(json!({ "run": name, "summary": crate::run::summary::render_text(&summary) })).into_response())
    })
    .await
}

#[derive(Deserialize)]
struct CompareQuery {
    baseline: String,
    candidate: String,
}

/// The comparison report (Markdown) of two runs under `--runs`.
async fn admin_compare(State(state): State<Arc<ServiceState>>, headers: HeaderMap, Query(q): Query<CompareQuery>) -> Reply {
    admin(&state, &headers)?;
    let Some(root) = state.runs.clone() else { return Err(reject(StatusCode::NOT_FOUND, "the service was started without --runs")) };
    blocking(move || {
        let (Some(baseline), Some(candidate)) = (run_dir(&root, &q.baseline), run_dir(&root, &q.candidate)) else {
            return Err(reject(StatusCode::NOT_FOUND, "no such run"));
        };
        let runs = [baseline, candidate].map(|d| crate::compare::table::RunTable::load(&d));
        let [baseline, candidate] = runs;
        let runs = [baseline.map_err(|e| internal(&state, e))?, candidate.map_err(|e| internal(&state, e))?];
        let report = crate::compare::report::build(&runs, 0, &crate::compare::CompareOptions::default()).map_err(|e| internal(&state, e))?;
        Ok(Json(json!({ "report": crate::compare::report::markdown::render(&report) })).into_response())
    })
    .await
}
