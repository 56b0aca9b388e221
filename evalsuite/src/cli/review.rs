//! `tunelab review` (create studies, invite reviewers, close, results) and `tunelab serve`
//! (the review service).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tunelab_evalsuite::review::listen::{self, ServeLimits};
use tunelab_evalsuite::review::results::render_text;
use tunelab_evalsuite::review::server::{router, ServiceState};
use tunelab_evalsuite::review::{create_study, study_results, token, Store, Study, StudyOptions};

/// `tunelab review …`.
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Create a blind A/B study from stored runs (the cases they share).
    New(NewArgs),
    /// Invite a reviewer: prints their secret review link (shown once).
    Invite(InviteArgs),
    /// End voting.
    Close(StudyArg),
    /// Win rates, Bradley–Terry ratings and reviewer agreement.
    Results(ResultsArgs),
}

/// Options of `review new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Run directories to compare (two or more).
    #[arg(long, num_args = 2.., required = true)]
    runs: Vec<PathBuf>,
    /// Only these categories (comma-separated).
    #[arg(long, value_delimiter = ',')]
    categories: Vec<String>,
    /// Review at most N items, drawn at random.
    #[arg(long)]
    sample: Option<usize>,
    /// Seed for the sample and the item order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Reviewers who judge each item.
    #[arg(long, default_value_t = 1)]
    reviewers_per_item: usize,
    /// Show reviewers the reference answer.
    #[arg(long)]
    show_reference: bool,
    /// A word that identifies a system (besides run, model and adapter names); items whose
    /// answers contain it are left out. Repeatable.
    #[arg(long = "identity-word")]
    identity_words: Vec<String>,
    /// The study directory to create.
    #[arg(long)]
    out: PathBuf,
}

/// Options of `review invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// The study directory.
    study: PathBuf,
    /// The reviewer's name (shown in agreement tables, never to other reviewers).
    #[arg(long)]
    reviewer: String,
    /// The address reviewers reach the service at.
    #[arg(long, default_value = "http://127.0.0.1:8765")]
    base_url: String,
}

/// A study directory.
#[derive(Debug, Args)]
pub struct StudyArg {
    /// The study directory.
    study: PathBuf,
}

/// Options of `review results`.
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// The study directory.
    study: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Options of `tunelab serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Study directories to serve (repeatable).
    #[arg(long = "study")]
    studies: Vec<PathBuf>,
    /// A folder of run directories admins may browse.
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8765")]
    addr: SocketAddr,
    /// A file holding the admin token (else $TUNELAB_ADMIN_TOKEN; without either, the admin
    /// endpoints are off). Never pass the token itself on the command line.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
}

/// Runs a `review` subcommand.
pub fn run(cmd: ReviewCommand) -> anyhow::Result<bool> {
    match cmd {
        ReviewCommand::New(a) => {
            let opts = StudyOptions {
                runs: a.runs,
                categories: a.categories,
                sample: a.sample,
                seed: a.seed,
                reviewers_per_item: a.reviewers_per_item,
                show_reference: a.show_reference,
                identity_words: a.identity_words,
            };
            let (study, key) = create_study(&a.out, &opts)?;
            println!("study {}: {} items, {} tasks, {} reviewer(s) per task", a.out.display(), study.items.len(), study.tasks.len(), study.reviewers_per_item);
            for e in &key.excluded {
                println!("  left out {}: {}", e.case_id, e.reason);
            }
            println!("next: tunelab review invite {} --reviewer NAME", a.out.display());
        }
        ReviewCommand::Invite(a) => {
            Study::read(&a.study)?;
            let name = a.reviewer.trim();
            if name.is_empty() || name.chars().count() > 100 {
                bail!("--reviewer must be a name of 1-100 characters");
            }
            let mut store = Store::open(&a.study)?;
            if let Some(at) = store.closed_at()? {
                bail!("the study was closed at {at}: a new reviewer could not vote");
            }
            let secret = token::new_token();
            store.add_reviewer(name, &token::hash(&secret), &tunelab_evalsuite::run::now_utc().1)?;
            println!("{}/review#t={secret}", a.base_url.trim_end_matches('/'));
            eprintln!("This link is the reviewer's password: it is shown only now (the study keeps its hash).");
        }
        ReviewCommand::Close(a) => {
            Study::read(&a.study)?;
            let at = tunelab_evalsuite::run::now_utc().1;
            if Store::open(&a.study)?.close(&at)? {
                println!("study {} closed to votes at {at}", a.study.display());
            } else {
                println!("study {} was already closed", a.study.display());
            }
        }
        ReviewCommand::Results(a) => {
            let results = study_results(&a.study)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", render_text(&results));
            }
        }
    }
    Ok(true)
}

/// Runs the review service until interrupted.
pub fn serve(a: ServeArgs) -> anyhow::Result<bool> {
    if a.studies.is_empty() && a.runs.is_none() {
        bail!("give at least one --study (or --runs for the admin run browser)");
    }
    let admin = match (&a.admin_token_file, std::env::var("TUNELAB_ADMIN_TOKEN").ok()) {
        (Some(path), _) => {
            let text = tunelab::fsutil::read_bounded(path, 4096).with_context(|| format!("reading the admin token file {}", path.display()))?;
            let token = String::from_utf8(text).context("the admin token file is not UTF-8")?.trim().to_string();
            if token.len() < 16 {
                bail!("the admin token in {} is shorter than 16 characters", path.display());
            }
            Some(token::hash(&token))
        }
        (None, Some(token)) if token.trim().len() >= 16 => Some(token::hash(token.trim())),
        (None, Some(_)) => bail!("TUNELAB_ADMIN_TOKEN is shorter than 16 characters"),
        (None, None) => None,
    };
    let state = ServiceState::open(&a.studies, a.runs.clone(), admin, Box::new(|e| eprintln!("error: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.addr).await.with_context(|| format!("listening on {}", a.addr))?;
        let addr = listener.local_addr()?;
        println!("serving on http://{addr} ({} studies; reviewers open their invite links, admins /admin)", a.studies.len());
        use std::io::Write;
        std::io::stdout().flush()?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        listen::serve(listener, router(Arc::new(state)), ServeLimits::default(), shutdown).await;
        anyhow::Ok(())
    })?;
    Ok(true)
}
