//! Executor threads for client connections (`--workers`): the main
//! executor, plus extra threads that take connections once the main one
//! is busy. A leaf: no crate imports.
//!
//! Why not one executor run by several threads: every task could then run
//! on any thread, and each wake-up may cross threads (a futex wake and a
//! cold cache each time); the bench measured a 2 KB GET at concurrency 1
//! 1.37x slower that way. Here a connection lives on one executor for its
//! whole life, and the first [`SPREAD_AFTER`] connections stay on the
//! main thread, which also runs the I/O reactor: a lightly loaded node
//! (kubelet and a few daemons) pays nothing for the extra threads. Past
//! that, each new connection goes to the executor with the fewest open
//! ones, so a busy node gets the CPU of more than one core, as nginx's
//! worker processes do.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use smol::channel;
use smol::Executor;

/// Connections the main executor takes before any goes elsewhere.
pub const SPREAD_AFTER: usize = 8;

/// One executor and how many connections it runs.
struct Worker {
    ex: Arc<Executor<'static>>,
    open: Arc<AtomicUsize>,
}

/// The executors connections run on.
pub struct Workers {
    /// Emptied by [`Workers::stop`], which drops the executors and with
    /// them every connection still on them.
    all: Mutex<Vec<Worker>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Closed to stop the extra threads.
    stop: channel::Sender<()>,
}

impl Workers {
    /// `main` (run by the caller) and `extra` more executors, each on a
    /// thread of its own. A thread that cannot be started is left out
    /// (logged by the caller through the returned count).
    pub fn start(main: Arc<Executor<'static>>, extra: usize) -> Workers {
        let (stop, stopped) = channel::bounded::<()>(1);
        let mut all = vec![Worker {
            ex: main,
            open: Arc::new(AtomicUsize::new(0)),
        }];
        let mut threads = Vec::new();
        for n in 1..=extra {
            let ex = Arc::new(Executor::new());
            let (run, stopped) = (ex.clone(), stopped.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn(move || {
                    smol::block_on(run.run(async move {
                        let _ = stopped.recv().await;
                    }))
                });
            if let Ok(handle) = spawned {
                threads.push(handle);
                all.push(Worker {
                    ex,
                    open: Arc::new(AtomicUsize::new(0)),
                });
            }
        }
        Workers {
            all: Mutex::new(all),
            threads: Mutex::new(threads),
            stop,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        // Pushes and takes only: a panic elsewhere leaves it whole.
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Executors running (the main one included).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Open connections on each executor, the main one first.
    pub fn open(&self) -> Vec<usize> {
        self.lock()
            .iter()
            .map(|w| w.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs one connection's future on the executor `Workers::pick`
    /// chooses, counted there until it ends.
    /// After [`Workers::stop`] the connection is dropped (closed).
    pub fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let Some((ex, open)) = self.pick() else {
            return;
        };
        open.fetch_add(1, Ordering::AcqRel);
        let guard = Open(open);
        ex.spawn(async move {
            let _guard = guard;
            connection.await;
        })
        .detach();
    }

    /// The main executor while it runs fewer than [`SPREAD_AFTER`]
    /// connections, else the one with the fewest (the main one on a tie).
    fn pick(&self) -> Option<(Arc<Executor<'static>>, Arc<AtomicUsize>)> {
        let all = self.lock();
        let main = all.first()?;
        let chosen = if main.open.load(Ordering::Acquire) < SPREAD_AFTER {
            main
        } else {
            all.iter()
                .min_by_key(|w| w.open.load(Ordering::Acquire))
                .unwrap_or(main)
        };
        Some((chosen.ex.clone(), chosen.open.clone()))
    }

    /// Ends the extra threads, then drops every executor's share here:
    /// the connections on the extra ones are dropped (closed) at once,
    /// those on the main one when its owner drops it. (A connection's
    /// future may hold these `Workers`: emptying them breaks that cycle.)
    pub fn stop(&self) {
        self.stop.close();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        let all = std::mem::take(&mut *self.lock());
        drop(all);
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("open", &self.open())
            .finish()
    }
}

/// A connection counted on its executor until dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn connections_stay_on_the_main_executor_until_it_is_busy_then_spread() {
        let main = Arc::new(Executor::new());
        let workers = Workers::start(main.clone(), 1);
        assert_eq!(workers.count(), 2);
        let (release, held) = channel::unbounded::<()>();
        let (ran, on) = channel::unbounded::<String>();
        for _ in 0..SPREAD_AFTER + 4 {
            let (held, ran) = (held.clone(), ran.clone());
            workers.spawn(async move {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                let _ = ran.send(name).await;
                let _ = held.recv().await;
            });
        }
        let names: Vec<String> = smol::block_on(main.run(async {
            let mut names = Vec::new();
            for _ in 0..SPREAD_AFTER + 4 {
                names.push(on.recv().await.unwrap());
            }
            names
        }));
        let elsewhere = names.iter().filter(|n| n.starts_with("worker-")).count();
        // The first 8 on main, the next ones to the least loaded: the
        // other executor, until it runs as many.
        assert_eq!(elsewhere, 4, "{names:?}");
        assert_eq!(workers.open(), vec![SPREAD_AFTER, 4]);
        release.close();
        smol::block_on(main.run(async {
            while workers.open().iter().any(|&n| n > 0) {
                smol::Timer::after(Duration::from_millis(5)).await;
            }
        }));
        workers.stop();
    }

    #[test]
    fn stop_ends_the_threads_and_drops_their_connections() {
        let main = Arc::new(Executor::new());
        let workers = Workers::start(main.clone(), 2);
        struct Dropped(channel::Sender<()>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                let _ = self.0.try_send(());
            }
        }
        let workers = Arc::new(workers);
        let (dropped, seen) = channel::unbounded();
        for _ in 0..SPREAD_AFTER * 3 {
            // Each holds the Workers, as a connection's accept state does.
            let (d, held) = (Dropped(dropped.clone()), workers.clone());
            workers.spawn(async move {
                let _d = d;
                let _held = held;
                smol::future::pending::<()>().await;
            });
        }
        workers.stop();
        assert_eq!(workers.count(), 0);
        workers.spawn(async {}); // after stop: dropped, no panic
        drop(workers);
        drop(main);
        let mut n = 0;
        while seen.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, SPREAD_AFTER * 3);
    }
}
