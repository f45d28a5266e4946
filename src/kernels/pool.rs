//! The kernels' worker threads: made once, parked on a condvar when idle.
//!
//! [`ThreadPool::run`] hands a job (`n` independent tasks) to the pool and works on it from the
//! calling thread too; it returns when every task has run. Workers take tasks from a shared
//! counter, so a worker that the OS deschedules (another process on the same cores) just takes
//! fewer tasks instead of stalling the job. After a job a worker polls for the next one for a
//! short, bounded time (the next matmul of a forward step usually follows within microseconds),
//! yielding its core between polls after the first few microseconds, then parks; it never
//! spins while idle beyond that.
//!
//! One job runs at a time. A caller that finds the pool busy (another thread's matmul, or a
//! call from inside a task) runs its job inline, so the pool never deadlocks and results never
//! depend on which thread ran a task.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Polls with a bare `pause` before a waiting thread starts yielding its core.
const SPIN_POLLS: u32 = 2_000;
/// How long a waiting thread keeps polling (yielding between polls once past `SPIN_POLLS`)
/// before it parks. Yielding keeps a poller from starving other runnable threads (candle's own
/// pool, another process) when the cores are shared; on idle cores it returns at once.
const SPIN: Duration = Duration::from_micros(500);

/// A job as the workers see it: its tasks and the counter they take them from.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    n_tasks: usize,
    next: AtomicUsize,
    panicked: AtomicBool,
}

impl Job<'_> {
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n_tasks {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| (self.task)(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// State shared by the caller of `run` and the workers.
struct Shared {
    /// The current job, null when none. Set by `run` before it bumps `epoch`, cleared by it
    /// before it waits for `in_flight` to drop to zero.
    job: AtomicPtr<Job<'static>>,
    /// Bumped once per job, to wake the workers.
    epoch: AtomicU64,
    /// Workers that have registered for the current job and not yet left it.
    in_flight: AtomicUsize,
    shutdown: AtomicBool,
    /// Who is parked; guards the sleep/wake hand-offs (the job itself lives in the atomics).
    lock: Mutex<Parked>,
    /// Workers park here between jobs.
    wake: Condvar,
    /// The caller of `run` parks here while the last workers finish.
    done: Condvar,
}

/// Threads parked on `Shared`'s condvars, so a wake-up costs a syscall only when one is.
#[derive(Default)]
struct Parked {
    workers: usize,
    caller: bool,
}

/// A fixed set of worker threads for the kernels; see the module doc.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held by the thread whose job is running.
    busy: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl ThreadPool {
    /// A pool of `threads` threads in all: the caller of `run` plus `threads - 1` workers.
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            job: AtomicPtr::new(std::ptr::null_mut()),
            epoch: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(Parked::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("wick-kernel-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("invariant: the OS can start the kernel threads")
            })
            .collect();
        Self {
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// The process-wide pool the loaders use, made on first use: `WICK_THREADS` threads, else
    /// as many as the cores this process may use.
    pub fn global() -> Arc<ThreadPool> {
        static POOL: OnceLock<Arc<ThreadPool>> = OnceLock::new();
        Arc::clone(POOL.get_or_init(|| Arc::new(ThreadPool::new(default_threads()))))
    }

    /// Threads that work on a job, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `task(0..n_tasks)`, each exactly once, spread over the pool; returns when all ran.
    /// Panics if a task panicked.
    pub fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        let guard = match self.busy.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if guard.is_none() || n_tasks <= 1 || self.workers.is_empty() {
            (0..n_tasks).for_each(task);
            return;
        }
        let job = Job {
            task,
            n_tasks,
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        let s = &*self.shared;
        let ptr: *const Job<'_> = &job;
        s.job.store(ptr as *mut Job<'static>, Ordering::SeqCst);
        let parked = {
            let g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.epoch.fetch_add(1, Ordering::SeqCst);
            g.workers
        };
        if parked > 0 {
            s.wake.notify_all();
        }
        job.work();
        // Retire the job, then wait for the workers that registered for it. A worker that
        // registers from now on sees the null pointer and leaves without touching `job`.
        s.job.store(std::ptr::null_mut(), Ordering::SeqCst);
        if !poll_until(|| s.in_flight.load(Ordering::SeqCst) == 0) {
            let mut g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            while s.in_flight.load(Ordering::SeqCst) != 0 {
                g.caller = true;
                g = s.done.wait(g).unwrap_or_else(|p| p.into_inner());
                g.caller = false;
            }
        }
        drop(guard);
        if job.panicked.load(Ordering::Relaxed) {
            panic!("a kernel task panicked");
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.shutdown.store(true, Ordering::SeqCst);
            self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// `WICK_THREADS` if set to a positive number, else the cores available to this process.
pub fn default_threads() -> usize {
    std::env::var("WICK_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[allow(unsafe_code)]
fn worker(s: &Shared) {
    // The epoch the pool started at, not the current one: a job (or the shutdown) published
    // before this thread got going must not be missed.
    let mut seen = 0;
    loop {
        wait_for_job(s, seen);
        seen = s.epoch.load(Ordering::SeqCst);
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        s.in_flight.fetch_add(1, Ordering::SeqCst);
        let job = s.job.load(Ordering::SeqCst);
        if !job.is_null() {
            // SAFETY: `run` keeps the job alive until `in_flight` is back to zero after it
            // cleared `s.job`. We registered in `in_flight` before loading a non-null pointer
            // (both SeqCst), so `run` is still waiting for us and the job is still there.
            let job = unsafe { &*job };
            job.work();
        }
        if s.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            if g.caller {
                s.done.notify_all();
            }
        }
    }
}

/// Returns once `epoch` has moved past `seen` (a job or the shutdown): polls, then parks.
fn wait_for_job(s: &Shared, seen: u64) {
    if poll_until(|| s.epoch.load(Ordering::SeqCst) != seen) {
        return;
    }
    let mut g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
    while s.epoch.load(Ordering::SeqCst) == seen {
        g.workers += 1;
        g = s.wake.wait(g).unwrap_or_else(|p| p.into_inner());
        g.workers -= 1;
    }
}

/// Polls `ready` for up to [`SPIN`]: [`SPIN_POLLS`] times with a bare `pause`, then yielding
/// the core between polls. Returns whether `ready` came true.
fn poll_until(ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    let mut polls = 0u32;
    while !ready() {
        if polls < SPIN_POLLS {
            polls += 1;
            std::hint::spin_loop();
            continue;
        }
        if start.elapsed() > SPIN {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3, 8] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn workers_park_and_wake_after_idling() {
        let pool = ThreadPool::new(3);
        let count = AtomicUsize::new(0);
        for _ in 0..3 {
            pool.run(16, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
            // Longer than the spin: the workers are parked when the next job comes.
            std::thread::sleep(SPIN * 5);
        }
        assert_eq!(count.load(Ordering::Relaxed), 48);
    }

    #[test]
    fn concurrent_and_nested_callers_do_not_deadlock() {
        let pool = Arc::new(ThreadPool::new(2));
        let total = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..50 {
                        pool.run(4, &|_| {
                            // A job started from inside a task runs inline.
                            pool.run(2, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 4 * 2);
    }

    #[test]
    #[should_panic(expected = "a kernel task panicked")]
    fn a_panicking_task_reaches_the_caller() {
        let pool = ThreadPool::new(2);
        pool.run(8, &|i| assert!(i != 5, "task 5 fails"));
    }
}
