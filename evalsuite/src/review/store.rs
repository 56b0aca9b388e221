//! A study's reviewers, reservations and votes in SQLite (`review.db`): WAL journal,
//! synchronous commits, so a vote is on disk before its acknowledgement is sent; every vote
//! is kept (a changed vote is a new row; the latest counts), with the order its sides were
//! shown in.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::study::{Study, Task, DB_FILE};
use super::token::TokenHash;
use crate::error::{Error, Result};

/// How long a served item stays reserved for its reviewer.
pub const RESERVATION_MS: i64 = 10 * 60 * 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reviewers(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_sha256 BLOB NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS votes(
    id INTEGER PRIMARY KEY,
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
    task TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie', 'both_bad')),
    left_system INTEGER NOT NULL,
    right_system INTEGER NOT NULL,
    comment TEXT NOT NULL,
    request_id TEXT,
    at TEXT NOT NULL,
    UNIQUE (reviewer_id, request_id));
CREATE INDEX IF NOT EXISTS votes_by_reviewer ON votes(reviewer_id, task);
CREATE INDEX IF NOT EXISTS votes_by_task ON votes(task);
CREATE TABLE IF NOT EXISTS reservations(
    task TEXT NOT NULL,
    reviewer_id INTEGER NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (task, reviewer_id));
";

/// A reviewer's judgement of a task, relative to the sides shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// The left answer is better.
    Left,
    /// The right answer is better.
    Right,
    /// Equally good.
    Tie,
    /// Both are bad.
    BothBad,
}

impl Choice {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Right => "right",
            Self::Tie => "tie",
            Self::BothBad => "both_bad",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Left, Self::Right, Self::Tie, Self::BothBad].into_iter().find(|c| c.as_str() == s)
    }
}

/// A reviewer as stored.
#[derive(Debug, Clone)]
pub struct Reviewer {
    /// Row id.
    pub id: i64,
    /// Name given at invitation.
    pub name: String,
    /// The token's SHA-256.
    pub token_hash: TokenHash,
}

/// How far a reviewer is: tasks voted, and tasks voted plus those still open to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Tasks this reviewer voted on.
    pub done: usize,
    /// `done` plus the tasks still open to this reviewer.
    pub total: usize,
}

/// What a reviewer gets next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// This task (index into the study's tasks), now reserved for them.
    Task(usize),
    /// Nothing left for them.
    Finished,
}

/// Why a vote was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The study is closed.
    Closed,
    /// The task is not open to this reviewer (enough reviewers already, or reserved by
    /// others).
    NotAvailable,
    /// The request id was already used by this reviewer for another vote (another task,
    /// choice or comment): acknowledging it would claim a vote that was never stored.
    RequestIdReused,
}

/// An acknowledged vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The vote's row id.
    pub vote_id: i64,
    /// Whether this request id had been recorded before (nothing new was written).
    pub replayed: bool,
}

/// The latest vote of one reviewer on one task.
#[derive(Debug, Clone, PartialEq)]
pub struct VoteRow {
    /// Reviewer row id.
    pub reviewer: i64,
    /// Task index in the study.
    pub task: usize,
    /// The choice relative to the sides shown.
    pub choice: Choice,
    /// System index shown on the left.
    pub left: usize,
    /// System index shown on the right.
    pub right: usize,
}

/// An open `review.db`.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Creates the database of a new study in `dir` (or opens the one there).
    pub fn create(dir: &Path) -> Result<Self> {
        Self::connect(dir, OpenFlags::default())
    }

    /// Opens the study directory's database, which must exist: a study whose votes are gone
    /// is an error, not a fresh study with none.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(Error::Invalid(format!("{}: missing; it holds the study's reviewers and votes (is this a study directory?)", path.display())));
        }
        Self::connect(dir, OpenFlags::default().difference(OpenFlags::SQLITE_OPEN_CREATE))
    }

    fn connect(dir: &Path, flags: OpenFlags) -> Result<Self> {
        let path = dir.join(DB_FILE);
        let conn = Connection::open_with_flags(&path, flags).map_err(|source| Error::Database { path: path.clone(), source })?;
        let store = Self { conn, path };
        store.setup()?;
        Ok(store)
    }

    fn db<T>(&self, r: rusqlite::Result<T>) -> Result<T> {
        r.map_err(|source| Error::Database { path: self.path.clone(), source })
    }

    fn setup(&self) -> Result<()> {
        let mode: String = self.db(self.conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Invalid(format!("{}: the database would not switch to WAL mode (got {mode})", self.path.display())));
        }
        self.db(self.conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"))?;
        self.db(self.conn.busy_timeout(std::time::Duration::from_secs(10)))?;
        self.db(self.conn.execute_batch(SCHEMA))
    }

    /// Adds a reviewer; refuses a name already invited.
    pub fn add_reviewer(&mut self, name: &str, token_hash: &TokenHash, at: &str) -> Result<i64> {
        let exists: Option<i64> = self.db(self.conn.query_row("SELECT id FROM reviewers WHERE name = ?1", [name], |r| r.get(0)).optional())?;
        if exists.is_some() {
            return Err(Error::Invalid(format!("reviewer {name:?} is already invited (pick another name)")));
        }
        self.db(self.conn.execute("INSERT INTO reviewers(name, token_sha256, created_at) VALUES (?1, ?2, ?3)", params![name, &token_hash[..], at]))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Every reviewer.
    pub fn reviewers(&self) -> Result<Vec<Reviewer>> {
        let mut stmt = self.db(self.conn.prepare_cached("SELECT id, name, token_sha256 FROM reviewers ORDER BY id"))?;
        let rows = stmt.query_map([], |r| {
            let bytes: Vec<u8> = r.get(2)?;
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, bytes))
        });
        let rows: Vec<(i64, String, Vec<u8>)> = self.db(rows.and_then(|rows| rows.collect()))?;
        Ok(rows.into_iter().filter_map(|(id, name, bytes)| Some(Reviewer { id, name, token_hash: bytes.try_into().ok()? })).collect())
    }

    /// When the study was closed, if it was.
    pub fn closed_at(&self) -> Result<Option<String>> {
        self.db(self.conn.query_row("SELECT value FROM meta WHERE key = 'closed_at'", [], |r| r.get(0)).optional())
    }

    /// Closes the study to votes; `false` when it was already closed.
    pub fn close(&mut self, at: &str) -> Result<bool> {
        let n = self.db(self.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('closed_at', ?1)", [at]))?;
        Ok(n == 1)
    }

    /// The next task for `reviewer`: the one reserved for them if they have not voted on it
    /// yet (a reload shows the same item), else the first task in their own order that they
    /// have not voted on and that still needs reviewers, which is then reserved for them.
    pub fn next_task(&mut self, study: &Study, reviewer: i64, now_ms: i64) -> Result<(Next, Progress)> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|source| Error::Database { path: path.clone(), source })?;
        let state = checked(&path, TaskState::read(&tx, reviewer, now_ms))?;
        let progress = state.progress(study);
        let index = study.task_index();
        let mine = state.reserved_by_me.iter().filter_map(|t| index.get(t.as_str()).copied()).find(|&t| !state.voted_by_me.contains(&study.tasks[t].id));
        let next = mine.or_else(|| reviewer_order(study, reviewer).into_iter().find(|&t| state.open_to_me(study, &study.tasks[t], true)));
        let result = match next {
            Some(t) => {
                checked(&path, tx.execute(
                    "INSERT INTO reservations(task, reviewer_id, until_ms) VALUES (?1, ?2, ?3) ON CONFLICT(task, reviewer_id) DO UPDATE SET until_ms = excluded.until_ms",
                    params![study.tasks[t].id, reviewer, now_ms + RESERVATION_MS],
                ))?;
                Next::Task(t)
            }
            None => Next::Finished,
        };
        checked(&path, tx.commit())?;
        Ok((result, progress))
    }

    /// `reviewer`'s progress.
    pub fn progress(&mut self, study: &Study, reviewer: i64, now_ms: i64) -> Result<Progress> {
        let state = self.db(TaskState::read(&self.conn, reviewer, now_ms))?;
        Ok(state.progress(study))
    }

    /// Records `reviewer`'s vote on task `task`, with the sides they were shown. A vote on a
    /// task they voted on before replaces it (both rows are kept); a `request_id` seen before
    /// from the same reviewer with the same vote is acknowledged again without a new row (a
    /// client retrying after a lost reply never counts twice), and with another vote refused. Once the study is closed every vote, replayed
    /// or not, is refused. The row is committed (synchronously) before this returns.
    #[allow(clippy::too_many_arguments)]
    pub fn record_vote(
        &mut self,
        study: &Study,
        reviewer: i64,
        task: usize,
        choice: Choice,
        comment: &str,
        request_id: Option<&str>,
        now_ms: i64,
        at: &str,
    ) -> Result<std::result::Result<Ack, Refusal>> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|source| Error::Database { path: path.clone(), source })?;
        let closed: Option<String> = checked(&path, tx.query_row("SELECT value FROM meta WHERE key = 'closed_at'", [], |r| r.get(0)).optional())?;
        if closed.is_some() {
            return Ok(Err(Refusal::Closed));
        }
        let t = &study.tasks[task];
        if let Some(rid) = request_id {
            let seen: Option<(i64, String, String, String)> = checked(
                &path,
                tx.query_row("SELECT id, task, choice, comment FROM votes WHERE reviewer_id = ?1 AND request_id = ?2", params![reviewer, rid], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional(),
            )?;
            if let Some((vote_id, seen_task, seen_choice, seen_comment)) = seen {
                let same = seen_task == t.id && seen_choice == choice.as_str() && seen_comment == comment;
                return Ok(if same { Ok(Ack { vote_id, replayed: true }) } else { Err(Refusal::RequestIdReused) });
            }
        }
        let state = checked(&path, TaskState::read(&tx, reviewer, now_ms))?;
        if !state.voted_by_me.contains(&t.id) && !state.reserved_by_me.contains(&t.id) && !state.open_to_me(study, t, true) {
            return Ok(Err(Refusal::NotAvailable));
        }
        let [left, right] = sides(study, reviewer, t);
        checked(
            &path,
            tx.execute(
                "INSERT INTO votes(reviewer_id, task, choice, left_system, right_system, comment, request_id, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![reviewer, t.id, choice.as_str(), left as i64, right as i64, comment, request_id, at],
            ),
        )?;
        let vote_id = tx.last_insert_rowid();
        checked(&path, tx.execute("DELETE FROM reservations WHERE task = ?1 AND reviewer_id = ?2", params![t.id, reviewer]))?;
        checked(&path, tx.commit())?;
        Ok(Ok(Ack { vote_id, replayed: false }))
    }

    /// The tasks `reviewer` voted on, in the order of their first vote, each with their
    /// latest choice.
    pub fn history(&self, study: &Study, reviewer: i64) -> Result<Vec<(usize, Choice)>> {
        let index = study.task_index();
        let mut stmt = self.db(self.conn.prepare_cached(
            "SELECT task, (SELECT choice FROM votes l WHERE l.reviewer_id = v.reviewer_id AND l.task = v.task ORDER BY id DESC LIMIT 1)
             FROM votes v WHERE reviewer_id = ?1 GROUP BY task ORDER BY MIN(id)",
        ))?;
        let rows: Vec<(String, String)> = self.db(stmt.query_map([reviewer], |r| Ok((r.get(0)?, r.get(1)?))).and_then(|r| r.collect()))?;
        Ok(rows.into_iter().filter_map(|(task, choice)| Some((*index.get(task.as_str())?, Choice::parse(&choice)?))).collect())
    }

    /// The latest vote of every reviewer on every task (votes on tasks the study does not
    /// have are ignored).
    pub fn latest_votes(&self, study: &Study) -> Result<Vec<VoteRow>> {
        let index = study.task_index();
        let mut stmt = self.db(self.conn.prepare_cached(
            "SELECT reviewer_id, task, choice, left_system, right_system FROM votes
             WHERE id IN (SELECT MAX(id) FROM votes GROUP BY reviewer_id, task) ORDER BY id",
        ))?;
        let rows: Vec<(i64, String, String, i64, i64)> =
            self.db(stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))).and_then(|r| r.collect()))?;
        // The file may have been edited: a vote that does not fit the study is an error,
        // never dropped or counted for a system the task did not show.
        rows.into_iter()
            .map(|(reviewer, task_id, choice, left, right)| {
                let bad = |why: String| Error::Invalid(format!("{}: reviewer {reviewer}'s vote on task {task_id}: {why}", self.path.display()));
                let task = *index.get(task_id.as_str()).ok_or_else(|| bad("no such task in study.json".into()))?;
                let choice = Choice::parse(&choice).ok_or_else(|| bad(format!("unknown choice {choice:?}")))?;
                let pair = study.tasks[task].pair;
                let shown = (usize::try_from(left).ok(), usize::try_from(right).ok());
                let (Some(left), Some(right)) = shown else { return Err(bad(format!("systems shown ({left}, {right}) are not the task's {pair:?}"))) };
                if [left, right] != pair && [right, left] != pair {
                    return Err(bad(format!("systems shown ({left}, {right}) are not the task's {pair:?}")));
                }
                Ok(VoteRow { reviewer, task, choice, left, right })
            })
            .collect()
    }

    /// Every vote row ever written, oldest first (for audits and the durability test).
    pub fn all_votes(&self) -> Result<Vec<StoredVote>> {
        let mut stmt = self.db(self.conn.prepare_cached("SELECT id, reviewer_id, task, request_id FROM votes ORDER BY id"))?;
        self.db(stmt.query_map([], |r| Ok(StoredVote { id: r.get(0)?, reviewer: r.get(1)?, task: r.get(2)?, request_id: r.get(3)? })).and_then(|r| r.collect()))
    }
}

/// One stored vote row, as [`Store::all_votes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVote {
    /// Row id (the order votes were committed in).
    pub id: i64,
    /// Reviewer row id.
    pub reviewer: i64,
    /// The task's opaque id.
    pub task: String,
    /// The client's request id, when it sent one.
    pub request_id: Option<String>,
}

/// `r` with a database error attributed to the file at `path`.
fn checked<T>(path: &Path, r: rusqlite::Result<T>) -> Result<T> {
    r.map_err(|source| Error::Database { path: path.to_path_buf(), source })
}

/// The vote and reservation state one decision needs.
struct TaskState {
    voted_by_me: HashSet<String>,
    reserved_by_me: Vec<String>,
    voters: HashMap<String, usize>,
    reserved_by_others: HashMap<String, usize>,
}

impl TaskState {
    fn read(conn: &Connection, reviewer: i64, now_ms: i64) -> rusqlite::Result<Self> {
        let voted_by_me = conn
            .prepare_cached("SELECT DISTINCT task FROM votes WHERE reviewer_id = ?1")?
            .query_map([reviewer], |r| r.get(0))?
            .collect::<rusqlite::Result<HashSet<String>>>()?;
        let voters = conn
            .prepare_cached("SELECT task, COUNT(DISTINCT reviewer_id) FROM votes GROUP BY task")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize)))?
            .collect::<rusqlite::Result<HashMap<_, _>>>()?;
        let mut reserved_by_me = Vec::new();
        let mut reserved_by_others: HashMap<String, usize> = HashMap::new();
        let mut stmt = conn.prepare_cached("SELECT task, reviewer_id FROM reservations WHERE until_ms > ?1 ORDER BY until_ms DESC")?;
        for row in stmt.query_map([now_ms], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (task, who) = row?;
            if who == reviewer {
                reserved_by_me.push(task);
            } else {
                *reserved_by_others.entry(task).or_default() += 1;
            }
        }
        Ok(Self { voted_by_me, reserved_by_me, voters, reserved_by_others })
    }

    /// Whether `task` may go to this reviewer: not voted on by them, and fewer reviewers
    /// than the study asks for have voted on it (counting others' live reservations when
    /// `count_reservations`).
    fn open_to_me(&self, study: &Study, task: &Task, count_reservations: bool) -> bool {
        let voters = self.voters.get(&task.id).copied().unwrap_or(0);
        let reserved = if count_reservations { self.reserved_by_others.get(&task.id).copied().unwrap_or(0) } else { 0 };
        !self.voted_by_me.contains(&task.id) && voters + reserved < study.reviewers_per_item
    }

    fn progress(&self, study: &Study) -> Progress {
        let done = study.tasks.iter().filter(|t| self.voted_by_me.contains(&t.id)).count();
        let open = study.tasks.iter().filter(|t| self.open_to_me(study, t, false)).count();
        Progress { done, total: done + open }
    }
}

/// A reviewer's own order of the study's tasks (seeded by the study's secret seed and the
/// reviewer), so reviewers do not all start on the same items.
pub fn reviewer_order(study: &Study, reviewer: i64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..study.tasks.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(study.seed ^ (reviewer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    order
}

/// The systems shown `[left, right]` to `reviewer` for `task`: a coin flip per reviewer and
/// task, derived from the study's secret seed, so a reload shows the same sides.
pub fn sides(study: &Study, reviewer: i64, task: &Task) -> [usize; 2] {
    let digest = Sha256::new().chain_update(study.seed.to_le_bytes()).chain_update(reviewer.to_le_bytes()).chain_update(task.id.as_bytes()).finalize();
    if digest[0] & 1 == 0 {
        task.pair
    } else {
        [task.pair[1], task.pair[0]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::study::{Item, Study, Task};

    fn study(tasks: usize, seed: u64) -> Study {
        Study {
            schema_version: 1,
            name: "s".into(),
            created_at: String::new(),
            systems: vec!["sa".into(), "sb".into()],
            items: vec![Item {
                case_id: "c".into(),
                category: "seen".into(),
                prompt: "p".into(),
                reference: String::new(),
                answers: vec!["a".into(), "b".into()],
                judge_scores: vec![],
            }],
            tasks: (0..tasks).map(|i| Task { id: format!("t{i}"), item: 0, pair: [0, 1] }).collect(),
            reviewers_per_item: 1,
            show_reference: false,
            seed,
            excluded: 0,
        }
    }

    #[test]
    fn sides_are_stable_per_reviewer_and_task_and_vary_between_them() {
        let s = study(200, 42);
        let shown: Vec<[usize; 2]> = s.tasks.iter().map(|t| sides(&s, 1, t)).collect();
        assert_eq!(shown, s.tasks.iter().map(|t| sides(&s, 1, t)).collect::<Vec<_>>(), "a reload shows the same sides");
        let swapped = shown.iter().filter(|p| **p == [1, 0]).count();
        assert!((60..=140).contains(&swapped), "{swapped} of 200 swapped");
        let other: Vec<[usize; 2]> = s.tasks.iter().map(|t| sides(&s, 2, t)).collect();
        assert_ne!(shown, other, "another reviewer gets other sides");
        assert_ne!(reviewer_order(&s, 1), reviewer_order(&s, 2), "reviewers get their own order");
    }

    #[test]
    fn a_vote_is_refused_once_the_task_has_its_reviewers_and_after_close() {
        let dir = std::env::temp_dir().join(format!("tunelab-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = study(1, 7);
        let mut store = Store::create(&dir).unwrap();
        let (a, b) = (store.add_reviewer("a", &[1; 32], "t").unwrap(), store.add_reviewer("b", &[2; 32], "t").unwrap());
        assert!(store.add_reviewer("a", &[3; 32], "t").is_err(), "names are unique");
        assert_eq!(store.next_task(&s, a, 0).unwrap().0, Next::Task(0));
        // b finds the only task reserved for a.
        assert_eq!(store.next_task(&s, b, 1).unwrap().0, Next::Finished);
        assert_eq!(store.record_vote(&s, b, 0, Choice::Left, "", Some("b1"), 1, "t").unwrap(), Err(Refusal::NotAvailable));
        let ack = store.record_vote(&s, a, 0, Choice::Tie, "", Some("a1"), 2, "t").unwrap().unwrap();
        assert!(!ack.replayed);
        assert_eq!(store.record_vote(&s, a, 0, Choice::Tie, "", Some("a1"), 3, "t").unwrap().unwrap(), Ack { vote_id: ack.vote_id, replayed: true });
        // The same request id for another vote is refused, not acknowledged as stored.
        assert_eq!(store.record_vote(&s, a, 0, Choice::Left, "", Some("a1"), 3, "t").unwrap(), Err(Refusal::RequestIdReused));
        // The reservation expires, but the task has its one reviewer.
        assert_eq!(store.next_task(&s, b, RESERVATION_MS + 10).unwrap().0, Next::Finished);
        assert!(store.close("t").unwrap());
        assert!(!store.close("t").unwrap(), "already closed");
        assert_eq!(store.record_vote(&s, a, 0, Choice::Right, "", Some("a2"), 4, "t").unwrap(), Err(Refusal::Closed));
        let votes = store.latest_votes(&s).unwrap();
        assert_eq!(votes.len(), 1);
        assert_eq!(votes[0].choice, Choice::Tie);
        // An edited vote for a system the task did not show is refused, not counted.
        store.conn.execute("UPDATE votes SET left_system = 99", []).unwrap();
        let err = store.latest_votes(&s).unwrap_err().to_string();
        assert!(err.contains("review.db") && err.contains("not the task's"), "{err}");
        // A study directory without its database is an error, and none is created.
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(Store::open(&empty).err().unwrap().to_string().contains("missing"));
        assert!(!empty.join(DB_FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
