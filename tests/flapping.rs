//! A flapping link (issue 10, item 4): the relay freezes and thaws every
//! 0.5 to 3 s (seeded PRNG) for `LITE_FLAP_SECS` seconds [120] while a
//! reflector LISTs and WATCHes pods through lite-apiserver and the test
//! creates, updates and deletes pods on the double. During the run no entry
//! file is ever torn or mixed; once the link settles and the proxy is
//! online, the cached list entry and the reflector's view both equal the
//! upstream's list (same (name, resourceVersion) set).
//!
//! `LITE_FLAP_SEED` replays a run (the seed is printed).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::entries::{self, EntryFile};
use support::reflector::Reflector;
use support::silence::{wait_online, wait_until, Rig, BOUND, KUBELET};

const PODS: &str = "/api/v1/namespaces/edge/pods";
/// Pods the mutator plays with (besides the seeded web-1..3).
const NAMES: u64 = 20;

/// xorshift64*: small, seeded, good enough to pick waits and operations.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates, updates or deletes one pod on the double.
fn mutate(double: &support::double::Double, rng: &mut Prng, round: u64) {
    let name = format!("flap-{:02}", rng.between(0, NAMES - 1));
    let exists = double.get("/api/v1", "pods", "edge", &name).is_some();
    if exists && rng.between(0, 2) == 0 {
        double.delete("/api/v1", "pods", "edge", &name);
        return;
    }
    let mut pod = support::world::pod("edge", &name, "edge-1", 0);
    pod["metadata"]["labels"]["round"] = json!(round.to_string());
    double.apply("/api/v1", "pods", "edge", &name, pod);
}

#[test]
fn a_flapping_link_leaves_the_cached_list_equal_to_the_upstream() {
    let secs = env_u64("LITE_FLAP_SECS", 120);
    let seed = env_u64("LITE_FLAP_SEED", 0x5eed_f1a9) | 1;
    println!("flapping for {secs} s, LITE_FLAP_SEED={seed}");
    let rig = Rig::new("flapping", &[]);
    let log = || rig.proxy.log_text();
    let entry = entries::plain(&rig.cache(), "kubelet/api/v1/namespaces/edge/pods");
    let reflector = Reflector::start(rig.node(), PODS, &[KUBELET]);
    reflector.wait_for("the first LIST and WATCH", BOUND, |v| v.watches >= 1);

    let done = AtomicBool::new(false);
    let (mut flips, mut mutations) = (0u64, 0u64);
    let mut torn: Vec<String> = Vec::new();
    std::thread::scope(|s| {
        let flapper = s.spawn(|| {
            let mut rng = Prng(seed);
            let end = Instant::now() + Duration::from_secs(secs);
            let mut n = 0u64;
            while Instant::now() < end {
                std::thread::sleep(Duration::from_millis(rng.between(500, 3_000)));
                if rig.relay.is_frozen() {
                    rig.relay.thaw();
                } else {
                    rig.relay.freeze();
                }
                n += 1;
            }
            rig.relay.thaw();
            done.store(true, Ordering::SeqCst);
            n
        });
        let mutator = s.spawn(|| {
            let mut rng = Prng(seed.rotate_left(17) | 1);
            let mut n = 0u64;
            while !done.load(Ordering::SeqCst) {
                mutate(&rig.double, &mut rng, n);
                n += 1;
                std::thread::sleep(Duration::from_millis(rng.between(50, 300)));
            }
            n
        });
        // Meanwhile no entry on disk may ever be torn or mixed.
        while !done.load(Ordering::SeqCst) {
            torn.extend(entries::problems(&rig.cache()));
            std::thread::sleep(Duration::from_millis(500));
        }
        flips = flapper.join().unwrap();
        mutations = mutator.join().unwrap();
    });
    let v = reflector.view();
    println!(
        "{flips} flips, {mutations} mutations; reflector: {} lists, {} watches, {} events, {} clean ends",
        v.lists, v.watches, v.events, v.clean_ends
    );
    assert!(
        torn.is_empty(),
        "entries torn or mixed during the run:\n{}",
        torn.join("\n")
    );

    // Settled: the link is up, nothing changes upstream any more.
    wait_online(&rig.proxy, true, BOUND);
    let upstream = entries::item_versions(&rig.double.list_json("/api/v1", "pods", "edge"));
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        "the cached pod list to equal the upstream's",
        BOUND,
        || {
            let cached = EntryFile::read(&entry).and_then(|e| e.json());
            match cached {
                Ok(list) => {
                    let got = entries::item_versions(&list);
                    *last.borrow_mut() = format!(
                        "cached list rv {}: missing {:?}, extra {:?}",
                        list["metadata"]["resourceVersion"],
                        upstream.difference(&got).collect::<Vec<_>>(),
                        got.difference(&upstream).collect::<Vec<_>>()
                    );
                    got == upstream
                }
                Err(e) => {
                    *last.borrow_mut() = e;
                    false
                }
            }
        },
        || format!("{}\n{}", last.borrow(), log()),
    );
    let names: std::collections::BTreeMap<String, String> = upstream
        .iter()
        .map(|(k, rv)| (k.trim_start_matches("edge/").to_owned(), rv.clone()))
        .collect();
    reflector.wait_for(
        "the reflector's view to equal the upstream's list",
        BOUND,
        |v| v.items == names,
    );
    let problems = entries::problems(&rig.cache());
    assert!(
        problems.is_empty(),
        "malformed entries at the end:\n{}",
        problems.join("\n")
    );
}
