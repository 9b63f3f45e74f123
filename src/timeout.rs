//! Coarse timeouts for the request path: arming one costs a lock and a
//! slot in a table, never a system call. A leaf: no crate imports.
//!
//! Why not `async_io::Timer`: arming one writes to the reactor's eventfd
//! (the reactor must learn of the earlier deadline), and the wake-up that
//! follows finds nothing to do. On the proxy every keep-alive wait and
//! every upstream read arms a timeout that almost never fires, so that
//! was two to three arms per GET, each an eventfd write, an eventfd read,
//! an `epoll_ctl`, a `timerfd_settime` and an empty pass of the reactor;
//! and an empty pass after async-io's 500 µs hand-over window gives the
//! reactor to its helper thread, so the next events reach the executor
//! through a futex wake-up (measured with `strace -f -c`: 13.4 system
//! calls per proxied GET against nginx's 9; `LITE_VALGRIND_TOOL=strace`
//! in the bench). nginx keeps its timers in a tree and only passes the
//! earliest to `epoll_wait`; this keeps them in a table that one thread
//! scans.
//!
//! One thread, `timeouts`, started on first use, wakes every [`TICK`]
//! while any timeout is armed and wakes the tasks whose deadline passed;
//! with none armed it sleeps until one is. A timeout therefore fires up to
//! one `TICK` late: right for waits of a second or more (idle clients,
//! silent upstreams, slow heads), wrong for anything that needs precision,
//! which keeps `smol::Timer`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often the `timeouts` thread looks at the armed deadlines: the most
/// a timeout fires late.
pub const TICK: Duration = Duration::from_millis(100);

/// Stack of the `timeouts` thread (it only scans a table and wakes tasks).
const STACK: usize = 64 * 1024;

/// A future that completes at its deadline (at most [`TICK`] later).
///
/// Armed on its first poll, disarmed on drop: a timeout raced against
/// work that finished first (`work.or(sleep(..))`) costs a lock on arm and
/// one on drop.
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    armed: Option<Slot>,
    /// The reactor's timer, used only when no thread could be started.
    fallback: Option<async_io::Timer>,
}

/// A table slot: its index and the generation that owns it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: usize,
    generation: u64,
}

/// Completes `after` from now (up to [`TICK`] later).
pub fn sleep(after: Duration) -> Sleep {
    let now = Instant::now();
    Sleep {
        deadline: now
            .checked_add(after)
            .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        armed: None,
        fallback: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.disarm();
            return Poll::Ready(());
        }
        let Some(wheel) = Wheel::get() else {
            // No thread could be started: fall back to the reactor's timer.
            let deadline = self.deadline;
            let timer = self
                .fallback
                .get_or_insert_with(|| async_io::Timer::at(deadline));
            return Pin::new(timer).poll(cx).map(|_| ());
        };
        let deadline = self.deadline;
        match self.armed {
            Some(slot) => wheel.update(slot, cx.waker()),
            None => self.armed = Some(wheel.arm(deadline, cx.waker())),
        }
        Poll::Pending
    }
}

impl Sleep {
    fn disarm(&mut self) {
        if let (Some(slot), Some(wheel)) = (self.armed.take(), Wheel::get()) {
            wheel.disarm(slot);
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// One armed deadline.
struct Entry {
    deadline: Instant,
    generation: u64,
    /// Taken when it fires.
    waker: Option<Waker>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    armed: usize,
    next_generation: u64,
    /// The thread waits for a first deadline (not ticking).
    idle: bool,
}

/// The table and the thread that fires it.
struct Wheel {
    table: Mutex<Table>,
    wake: Condvar,
}

impl Wheel {
    /// The process's wheel, its thread started on first use; `None` if
    /// the thread could not be started.
    fn get() -> Option<&'static Arc<Wheel>> {
        static WHEEL: OnceLock<Option<Arc<Wheel>>> = OnceLock::new();
        WHEEL
            .get_or_init(|| {
                let wheel = Arc::new(Wheel {
                    table: Mutex::new(Table::default()),
                    wake: Condvar::new(),
                });
                let run = wheel.clone();
                std::thread::Builder::new()
                    .name("timeouts".into())
                    .stack_size(STACK)
                    .spawn(move || run.run())
                    .ok()
                    .map(|_| wheel)
            })
            .as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding it cannot leave the table inconsistent
        // (every update is one assignment), so a poisoned lock is used.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arm(&self, deadline: Instant, waker: &Waker) -> Slot {
        let mut t = self.lock();
        t.next_generation += 1;
        let generation = t.next_generation;
        let entry = Some(Entry {
            deadline,
            generation,
            waker: Some(waker.clone()),
        });
        let index = match t.free.pop() {
            Some(i) => {
                t.slots[i] = entry;
                i
            }
            None => {
                t.slots.push(entry);
                t.slots.len() - 1
            }
        };
        t.armed += 1;
        if std::mem::take(&mut t.idle) {
            drop(t);
            self.wake.notify_one();
        }
        Slot { index, generation }
    }

    /// A later poll: keep the waker current (the task may have moved).
    fn update(&self, slot: Slot, waker: &Waker) {
        let mut t = self.lock();
        if let Some(Some(e)) = t.slots.get_mut(slot.index) {
            if e.generation == slot.generation {
                match &mut e.waker {
                    Some(w) if w.will_wake(waker) => {}
                    w => *w = Some(waker.clone()),
                }
            }
        }
    }

    fn disarm(&self, slot: Slot) {
        let mut t = self.lock();
        let owned = matches!(
            t.slots.get(slot.index),
            Some(Some(e)) if e.generation == slot.generation
        );
        if owned {
            t.slots[slot.index] = None;
            t.free.push(slot.index);
            t.armed -= 1;
        }
    }

    /// The `timeouts` thread: fire what is due, every [`TICK`].
    fn run(&self) {
        let mut due = Vec::new();
        loop {
            let mut t = self.lock();
            while t.armed == 0 {
                t.idle = true;
                t = self.wake.wait(t).unwrap_or_else(|e| e.into_inner());
            }
            let now = Instant::now();
            for e in t.slots.iter_mut().flatten() {
                if e.deadline <= now {
                    due.extend(e.waker.take());
                }
            }
            drop(t);
            // Woken outside the lock: a waker may run code that arms one.
            due.drain(..).for_each(Waker::wake);
            std::thread::sleep(TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::future::FutureExt;

    #[test]
    fn fires_after_its_deadline_and_at_most_a_tick_late() {
        let start = Instant::now();
        smol::block_on(sleep(Duration::from_millis(150)));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(took < Duration::from_millis(150) + TICK * 5, "{took:?}");
    }

    #[test]
    fn a_zero_timeout_is_ready_at_once() {
        smol::block_on(sleep(Duration::ZERO));
    }

    #[test]
    fn work_that_finishes_first_disarms_it() {
        let won = smol::block_on(async { 7 }.or(async {
            sleep(Duration::from_secs(60)).await;
            0
        }));
        assert_eq!(won, 7);
        // A pending one armed and dropped leaves no slot armed.
        let pending = smol::block_on(
            async {
                sleep(Duration::from_secs(60)).await;
                0
            }
            .or(async {
                smol::Timer::after(Duration::from_millis(20)).await;
                1
            }),
        );
        assert_eq!(pending, 1);
        let wheel = Wheel::get().expect("thread");
        let t = wheel.lock();
        let mine = t
            .slots
            .iter()
            .flatten()
            .filter(|e| {
                let left = e.deadline.saturating_duration_since(Instant::now());
                left > Duration::from_secs(30) && left <= Duration::from_secs(60)
            })
            .count();
        assert_eq!(mine, 0, "a dropped timeout stayed armed");
    }

    #[test]
    fn many_at_once_all_fire() {
        let all = (0..200).map(|i| sleep(Duration::from_millis(50 + i % 7)));
        smol::block_on(async {
            for s in all.collect::<Vec<_>>() {
                s.await;
            }
        });
    }

    #[test]
    fn a_slot_reused_by_a_later_timeout_is_not_disarmed_by_the_old_owner() {
        let wheel = Wheel::get().expect("thread");
        let waker = smol::block_on(smol::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())));
        let far = Instant::now() + Duration::from_secs(3600);
        let old = wheel.arm(far, &waker);
        wheel.disarm(old);
        let new = wheel.arm(far, &waker);
        wheel.disarm(old); // stale: must not touch the new owner
        let still = matches!(
            wheel.lock().slots.get(new.index),
            Some(Some(e)) if e.generation == new.generation
        );
        wheel.disarm(new);
        assert!(still);
    }
}
