//! A small, fixed pool of threads for blocking file I/O: entry reads and
//! opens, JWKS writes, certificate reloads, GC sweeps.
//!
//! The executor must never block on the disk (a slow flash would stall
//! every connection), and smol's own blocking pool can grow to hundreds of
//! threads (STYLE.md's trap). Here [`THREADS`] threads take jobs from one
//! bounded queue; a caller awaits its result without blocking anyone. A
//! leaf: no crate imports.

use std::sync::OnceLock;

use smol::channel::{self, Sender};

/// Threads in the pool. Two: one long read (a 100 MB entry is read in
/// pieces, but a piece can wait on the flash) never starves the others.
pub const THREADS: usize = 2;
/// Jobs queued at most before callers wait (bounded memory).
const QUEUE: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

fn queue() -> Option<&'static Sender<Job>> {
    static POOL: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, rx) = channel::bounded::<Job>(QUEUE);
        for i in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("lite-apiserver-io-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv_blocking() {
                        job();
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start an I/O thread: {e}");
                return None;
            }
        }
        Some(jobs)
    })
    .as_ref()
}

/// Runs `f` on the pool and waits for its result; `None` if the pool could
/// not run it (no thread could be started).
pub async fn run<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (done, result) = channel::bounded(1);
    let job: Job = Box::new(move || {
        let _ = done.try_send(f());
    });
    queue()?.send(job).await.ok()?;
    result.recv().await.ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_jobs_off_the_caller() {
        let caller = std::thread::current().id();
        let (ran_on, value) = smol::block_on(super::run(|| (std::thread::current().id(), 42)))
            .expect("the pool runs");
        assert_ne!(ran_on, caller);
        assert_eq!(value, 42);
        let many = smol::block_on(async {
            let jobs: Vec<_> = (0..50).map(|i| super::run(move || i * 2)).collect();
            let mut sum = 0;
            for j in jobs {
                sum += j.await.unwrap_or(0);
            }
            sum
        });
        assert_eq!(many, (0..50).map(|i| i * 2).sum());
    }
}
