//! The writer's job queue: the async side pushes without ever waiting,
//! the writer thread takes whatever has gathered.
//!
//! Why not `std::sync::mpsc`: each send to a receiver that waits is a
//! futex wake-up, and a writer that keeps up with the proxy waits after
//! every job, so each cached GET cost the proxy a wake-up and the writer
//! a sleep and a wake (the bench's proxy CPU per GET). Here a writer woken
//! from idle first lingers [`LINGER`] so that a busy proxy's answers reach
//! it in batches: at most one wake-up per `LINGER` (or per
//! [`LINGER_JOBS`] jobs), whatever the request rate. A job someone waits for ([`Awaited`]: for the writer's jobs, an
//! offline read's pending events, a flush, a GC pass, a torn entry) ends
//! the linger at once.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a writer woken from idle waits for more jobs before it works.
pub const LINGER: Duration = Duration::from_millis(2);
/// A linger also ends once this many jobs wait: a large body streaming in
/// (64 KiB pieces) does not pile up in memory meanwhile.
pub const LINGER_JOBS: usize = 16;

/// A job that someone waits for ends the writer's linger.
pub(crate) trait Awaited {
    /// Someone waits for this job's outcome.
    fn awaited(&self) -> bool;
}

/// The queue (one writer, many producers).
pub(crate) struct Queue<Job> {
    state: Mutex<State<Job>>,
    ready: Condvar,
    /// [`LINGER`] (longer in tests).
    linger: Duration,
}

impl<Job> Default for Queue<Job> {
    fn default() -> Self {
        Queue {
            linger: LINGER,
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
                idle: false,
                lingering: false,
            }),
            ready: Condvar::new(),
        }
    }
}

struct State<Job> {
    jobs: VecDeque<Job>,
    closed: bool,
    /// The writer waits for a first job.
    idle: bool,
    /// The writer lingers (wake it only for an awaited job).
    lingering: bool,
}

impl<Job: Awaited> Queue<Job> {
    fn lock(&self) -> MutexGuard<'_, State<Job>> {
        // Every update under the lock is a push, a drain or a flag: a
        // panic elsewhere cannot leave it half done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job; false once the queue is closed.
    pub(crate) fn push(&self, job: Job) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        let wake = s.idle || (s.lingering && (job.awaited() || s.jobs.len() + 1 >= LINGER_JOBS));
        if wake {
            s.idle = false;
            s.lingering = false;
        }
        s.jobs.push_back(job);
        drop(s);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// No more jobs: the writer ends once it has taken what is queued.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        let wake = s.idle || s.lingering;
        drop(s);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Waits until a job is queued (or `due` passes), lingers if it came
    /// to an idle writer, then moves every queued job into `out`. False
    /// when the queue is closed and empty: the writer's end.
    pub(crate) fn take(&self, out: &mut VecDeque<Job>, due: Option<Instant>) -> bool {
        let mut s = self.lock();
        let mut waited = false;
        while s.jobs.is_empty() && !s.closed {
            let left = due.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return true;
            }
            s.idle = true;
            waited = true;
            s = self.wait(s, left);
            s.idle = false;
        }
        if waited && !s.closed && !s.jobs.iter().any(Job::awaited) {
            s = self.linger(s);
        }
        out.extend(s.jobs.drain(..));
        !(s.closed && out.is_empty())
    }

    /// Waits [`LINGER`], or less if an awaited job, a full batch or the
    /// close comes.
    fn linger<'a>(&'a self, mut s: MutexGuard<'a, State<Job>>) -> MutexGuard<'a, State<Job>> {
        let until = Instant::now() + self.linger;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero()
                || s.closed
                || s.jobs.len() >= LINGER_JOBS
                || s.jobs.iter().any(Job::awaited)
            {
                s.lingering = false;
                return s;
            }
            s.lingering = true;
            s = self.wait(s, Some(left));
        }
    }

    fn wait<'a>(
        &'a self,
        s: MutexGuard<'a, State<Job>>,
        limit: Option<Duration>,
    ) -> MutexGuard<'a, State<Job>> {
        match limit {
            None => self.ready.wait(s).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                self.ready
                    .wait_timeout(s, d)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A job: its id, and whether it is awaited.
    struct Job(u64, bool);

    impl Awaited for Job {
        fn awaited(&self) -> bool {
            self.1
        }
    }

    fn abort(id: u64) -> Job {
        Job(id, false)
    }

    fn ids(jobs: &VecDeque<Job>) -> Vec<u64> {
        jobs.iter().map(|j| j.0).collect()
    }

    /// A queue whose linger is `linger`.
    fn lingering_for(linger: Duration) -> Arc<Queue<Job>> {
        Arc::new(Queue::<Job> {
            linger,
            ..Queue::default()
        })
    }

    /// A writer thread that takes once, started and waited for until it
    /// is idle; it returns what `take` returned and the ids it took.
    fn idle_writer(q: &Arc<Queue<Job>>) -> std::thread::JoinHandle<(bool, Vec<u64>)> {
        let writer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut out = VecDeque::new();
                let more = q.take(&mut out, None);
                (more, ids(&out))
            })
        };
        until(q, |s| s.idle);
        writer
    }

    fn until(q: &Queue<Job>, state: impl Fn(&State<Job>) -> bool) {
        while !state(&q.lock()) {
            std::thread::yield_now();
        }
    }

    #[test]
    fn jobs_pushed_while_the_writer_lingers_arrive_in_one_batch_in_order() {
        let q = Arc::new(Queue::<Job>::default());
        let writer = idle_writer(&q);
        for id in 1..=50 {
            assert!(q.push(abort(id)));
        }
        let (_, got) = writer.join().unwrap();
        assert_eq!(got, (1..=50).collect::<Vec<_>>());
    }

    #[test]
    fn an_awaited_job_ends_the_linger() {
        let q = lingering_for(Duration::from_secs(60));
        let writer = idle_writer(&q);
        q.push(abort(1));
        until(&q, |s| s.lingering);
        let start = Instant::now();
        q.push(Job(2, true));
        assert_eq!(writer.join().unwrap().1, vec![1, 2]);
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_full_batch_ends_the_linger() {
        let q = lingering_for(Duration::from_secs(60));
        let writer = idle_writer(&q);
        q.push(abort(0));
        // Wait until it lingers, then fill the batch.
        until(&q, |s| s.lingering);
        for id in 1..LINGER_JOBS as u64 {
            q.push(abort(id));
        }
        // Ended by the batch, long before the 60 s linger.
        let start = Instant::now();
        let took = writer.join().unwrap().1.len();
        assert_eq!(took, LINGER_JOBS);
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_due_time_ends_the_wait_without_jobs() {
        let q = Queue::<Job>::default();
        let mut out = VecDeque::new();
        let due = Instant::now() + Duration::from_millis(20);
        assert!(q.take(&mut out, Some(due)));
        assert!(out.is_empty());
        assert!(Instant::now() >= due);
    }

    #[test]
    fn closed_refuses_jobs_and_ends_the_writer_after_the_queued_ones() {
        let q = Queue::<Job>::default();
        q.push(abort(1));
        q.close();
        assert!(!q.push(abort(2)));
        let mut out = VecDeque::new();
        assert!(q.take(&mut out, None));
        assert_eq!(ids(&out), vec![1]);
        out.clear();
        assert!(!q.take(&mut out, None));
    }

    #[test]
    fn close_wakes_an_idle_writer() {
        let q = Arc::new(Queue::<Job>::default());
        let writer = idle_writer(&q);
        q.close();
        assert!(!writer.join().unwrap().0);
    }
}
