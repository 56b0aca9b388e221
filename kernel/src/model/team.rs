//! A model step's parallel loops on rayon's threads kept spinning between loops (decoding
//! and prompt steps whose products all run over block weights, see
//! `Transformer::step_sequences`).
//!
//! Why: a single-stream decoding step of SmolLM2 runs about 120 parallel loops of tens of
//! microseconds each (q/k/v, attention, o, gate/up, down per layer). Between two rayon loops
//! the other worker finds no work, goes to sleep, and is woken for the next loop (a futex
//! wake and a context switch each time): `perf` put about 15 % of `--weights int8-dot`
//! decoding in the kernel's scheduler. Inside [`with_spinning_team`], the pool's other
//! threads instead stay in [`Team::help`], spinning until the step ends, and [`for_each`]
//! hands them each loop's tasks through atomics, as llama.cpp's thread pool does. Outside a
//! team, [`for_each`] is an ordinary rayon loop.
//!
//! The team only serves loops started with [`for_each`]: a rayon loop started inside the
//! step still works, but finds the other threads busy and runs on the calling thread alone.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use rayon::prelude::*;

use super::fused::{self, SendPtr};

/// Spins a helper makes without work before it yields its core once (about 30 µs).
const SPINS_BEFORE_YIELD: u32 = 1 << 10;

thread_local! {
    /// The team the calling thread leads, while it runs [`with_spinning_team`]'s body.
    static LEADING: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

/// One parallel loop: `task(i)` for every `i < tasks`, each index claimed once.
struct Region<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
}

impl Region<'_> {
    /// Claims and runs tasks until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.tasks {
                return;
            }
            (self.task)(i);
        }
    }
}

/// The state the leading thread and its helpers share.
///
/// Protocol: the leader bumps `epoch`, then publishes `region`; a helper counts itself in
/// `active` *before* it reads `region`, and out after its last task. To close a loop the
/// leader clears `region`, then waits for `active` to reach zero. All four are `SeqCst`, so
/// a helper that read the region is counted before the leader's wait, and none reads a
/// region after the leader returned from its loop (the region lives on the leader's stack).
struct Team {
    region: AtomicPtr<Region<'static>>,
    epoch: AtomicUsize,
    active: AtomicUsize,
    stop: AtomicBool,
}

impl Team {
    /// A helper's loop: run each new region's tasks, spin in between, return at `stop`.
    fn help(&self) {
        let (mut seen, mut idle) = (0, 0u32);
        while !self.stop.load(Ordering::Acquire) {
            if self.epoch.load(Ordering::Acquire) == seen || self.region.load(Ordering::Relaxed).is_null() {
                idle += 1;
                if idle.is_multiple_of(SPINS_BEFORE_YIELD) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            idle = 0;
            let _counted = Counted::enter(&self.active);
            let region = self.region.load(Ordering::SeqCst);
            seen = self.epoch.load(Ordering::SeqCst);
            // SAFETY: a non-null region is alive until the leader has seen `active` at zero,
            // and this helper is counted in `active` until `_counted` drops.
            if let Some(region) = unsafe { region.as_ref() } {
                region.work();
            }
        }
    }
}

/// Membership in `active`, left on drop (also when a task panics, so the leader never
/// waits for a helper that is gone).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn enter(active: &'a AtomicUsize) -> Self {
        active.fetch_add(1, Ordering::SeqCst);
        Self(active)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `body` on a thread of rayon's pool with the pool's other threads spinning beside
/// it, ready for every [`for_each`] that `body` starts; they return to the pool when `body`
/// returns (or panics). Nested calls, and a pool of one thread, just run `body`.
///
/// The helpers are rayon jobs pushed before anything `body` pushes, and thieves take a
/// deque's oldest job first, so a job of `body`'s own (a rayon loop inside it) is stolen
/// only after every helper job was: the leader never finds one of its own helpers in its
/// deque while it waits for a stolen job (which would spin until a `body` that cannot
/// resume ends). Helpers nobody took are run at the end, see `stop`, and return at once.
pub(crate) fn with_spinning_team<R: Send>(body: impl FnOnce() -> R + Send) -> R {
    fused::on_pool(|| {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        if helpers == 0 || !LEADING.get().is_null() {
            return body();
        }
        let team = Team { region: AtomicPtr::new(std::ptr::null_mut()), epoch: AtomicUsize::new(0), active: AtomicUsize::new(0), stop: AtomicBool::new(false) };
        rayon::scope(|s| {
            for _ in 0..helpers {
                s.spawn(|_| team.help());
            }
            let _lead = Lead::start(&team);
            body()
        })
    })
}

/// The calling thread's lead of a team, given up on drop: the helpers are told to stop.
struct Lead<'a>(&'a Team);

impl<'a> Lead<'a> {
    fn start(team: &'a Team) -> Self {
        LEADING.set(team);
        Self(team)
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        LEADING.set(std::ptr::null());
        self.0.stop.store(true, Ordering::Release);
    }
}

/// Runs `task(i)` for every `i < tasks` in parallel: on the calling thread's spinning team
/// when it leads one, else as a rayon loop. Returns when every task is done.
pub(crate) fn for_each(tasks: usize, task: impl Fn(usize) + Sync) {
    let team = LEADING.get();
    if tasks <= 1 {
        (0..tasks).for_each(task);
        return;
    }
    // SAFETY: `LEADING` points at a team only while `with_spinning_team`'s body runs on
    // this thread, and the team outlives that body.
    let Some(team) = (unsafe { team.as_ref() }) else {
        (0..tasks).into_par_iter().for_each(&task);
        return;
    };
    let region = Region { task: &task, tasks, next: AtomicUsize::new(0) };
    team.epoch.fetch_add(1, Ordering::SeqCst);
    team.region.store((&region as *const Region<'_>).cast_mut().cast(), Ordering::SeqCst);
    // Declared after `region`, so dropped (the loop closed) before it, also on a panic.
    let _open = OpenRegion::new(team);
    region.work();
}

/// A published region, closed on drop: unpublished, then waited for until no helper is in
/// it. While it is open, loops started by its tasks on the leading thread are rayon loops.
struct OpenRegion<'a>(&'a Team);

impl<'a> OpenRegion<'a> {
    fn new(team: &'a Team) -> Self {
        LEADING.set(std::ptr::null());
        Self(team)
    }
}

impl Drop for OpenRegion<'_> {
    fn drop(&mut self) {
        self.0.region.store(std::ptr::null_mut(), Ordering::SeqCst);
        while self.0.active.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
        LEADING.set(self.0);
    }
}

/// [`for_each`] over the `chunk`-long pieces of `out` (the last may be shorter):
/// `task(i, piece)` gets piece `i` to write.
pub(crate) fn for_each_chunk_mut<T: Copy + Send>(out: &mut [T], chunk: usize, task: impl Fn(usize, &mut [T]) + Sync) {
    assert!(chunk > 0, "for_each_chunk_mut: chunks of zero elements");
    let (len, base) = (out.len(), SendPtr(out.as_mut_ptr()));
    for_each(len.div_ceil(chunk), |i| {
        let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(len));
        // SAFETY: pieces `lo..hi` of distinct `i` are disjoint and inside `out`, which this
        // call borrows mutably until every task is done.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(lo), hi - lo) };
        task(i, piece);
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    /// Every index runs exactly once, loop after loop, and the leader sees the helpers'
    /// writes when a loop returns.
    #[test]
    fn every_task_runs_once_in_many_loops() {
        for threads in [1, 2, 3] {
            pool(threads).install(|| {
                with_spinning_team(|| {
                    for round in 0..2000 {
                        let tasks = 1 + round % 37;
                        let mut out = vec![0usize; tasks * 3];
                        for_each_chunk_mut(&mut out, 3, |i, piece| piece.iter_mut().for_each(|v| *v += i + round));
                        let want: Vec<usize> = (0..tasks).flat_map(|i| [i + round; 3]).collect();
                        assert_eq!(out, want, "round {round} with {threads} threads");
                    }
                })
            });
        }
    }

    /// Counts the calling task in `arrived` and waits (20 s at most) for a second one;
    /// whether they met.
    fn meet(arrived: &AtomicUsize) -> bool {
        arrived.fetch_add(1, Ordering::SeqCst);
        let give_up = Instant::now() + Duration::from_secs(20);
        while arrived.load(Ordering::SeqCst) < 2 && Instant::now() < give_up {
            std::hint::spin_loop();
        }
        arrived.load(Ordering::SeqCst) == 2
    }

    /// The pool's other thread takes tasks: two tasks that each wait for the other to start
    /// finish only when they run at the same time.
    #[test]
    fn helpers_run_tasks_beside_the_leader() {
        pool(2).install(|| {
            with_spinning_team(|| {
                for _ in 0..50 {
                    let arrived = AtomicUsize::new(0);
                    let met = AtomicUsize::new(0);
                    for_each(2, |_| {
                        met.fetch_add(usize::from(meet(&arrived)), Ordering::SeqCst);
                    });
                    assert_eq!(met.load(Ordering::SeqCst), 2, "a task ran alone: no helper took the other");
                }
            })
        });
    }

    /// The calling thread's voluntary context switches so far (Linux counts one each time
    /// a thread blocks, as rayon's idle workers do between loops).
    fn voluntary_switches() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Between loops the helper spins instead of sleeping: across 200 loops separated by
    /// half a millisecond of the leader's own work (long enough for an idle rayon worker
    /// to go to sleep each time), the helper thread blocks almost never.
    #[test]
    fn helpers_stay_awake_between_loops() {
        pool(2).install(|| {
            with_spinning_team(|| {
                let leader = std::thread::current().id();
                let mut helper_switches = Vec::new();
                for _ in 0..200 {
                    let seen = std::sync::Mutex::new(None);
                    let arrived = AtomicUsize::new(0);
                    for_each(2, |_| {
                        meet(&arrived);
                        if std::thread::current().id() != leader {
                            *seen.lock().unwrap() = Some(voluntary_switches());
                        }
                    });
                    helper_switches.push(seen.into_inner().unwrap().expect("the helper ran a task"));
                    let busy = Instant::now() + Duration::from_micros(500);
                    while Instant::now() < busy {
                        std::hint::spin_loop();
                    }
                }
                let blocked = helper_switches.last().unwrap() - helper_switches.first().unwrap();
                assert!(blocked < 20, "the helper blocked {blocked} times in 200 loops");
            })
        });
    }

    /// Loops nested in a task, and loops outside any team, still run every task.
    #[test]
    fn nested_and_teamless_loops_run_every_task() {
        let count = AtomicUsize::new(0);
        for_each(100, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 100);
        pool(2).install(|| {
            with_spinning_team(|| {
                let count = AtomicUsize::new(0);
                for_each(8, |_| {
                    for_each(8, |_| {
                        count.fetch_add(1, Ordering::Relaxed);
                    })
                });
                assert_eq!(count.load(Ordering::Relaxed), 64);
                with_spinning_team(|| {
                    for_each(5, |_| {
                        count.fetch_add(1, Ordering::Relaxed);
                    })
                });
                assert_eq!(count.load(Ordering::Relaxed), 69);
            })
        });
    }

    /// A task's panic reaches the caller and leaves the pool usable.
    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let p = pool(2);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.install(|| {
                with_spinning_team(|| {
                    for_each(64, |i| assert!(i != 40, "task 40 fails"));
                })
            })
        }));
        assert!(caught.is_err());
        let sum = AtomicUsize::new(0);
        p.install(|| {
            with_spinning_team(|| {
                for_each(10, |i| {
                    sum.fetch_add(i, Ordering::Relaxed);
                })
            })
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }
}
