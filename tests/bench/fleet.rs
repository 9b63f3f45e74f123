//! `cargo bench --bench fleet [-- OPTIONS]`:
//! what a fleet of nodes costs the cloud, with and without lite-apiserver
//! (issue 13).
//!
//! One kube-apiserver double stands for the cloud, behind one cuttable
//! link ([`link`]: a network namespace's veth link taken down, or a relay
//! that goes silent, as a regional outage does). Each node
//! is a fake kubelet ([`kubelet`]: kubelet 1.36's requests on kubelet's
//! schedule, with the node's client certificate) talking either to the
//! double directly (the baseline) or to its own lite-apiserver process,
//! which talks to the double. Each side goes through the same windows:
//! fleet start, steady state, the link down for `--cut-secs`, and the
//! window after it returns, when a new pod is created for every node.
//! Everything is counted at the double: requests per window by kind
//! (`/readyz`, `/healthz`, `/livez` apart), the busiest second, the
//! connections held and the TLS handshakes made, and when each node's
//! new pod reached Running and its Lease was renewed.
//!
//! Options ([`opts`]): `--nodes`, `--start-secs`, `--steady-secs`,
//! `--cut-secs`, `--heal-secs`, `--cut silence|reset`, `--link`,
//! `--only`, `--lite-arg`, `--binary`, `--dump`, `--quick` (5 nodes,
//! short windows: under 4 minutes).
//! The report is printed and written to `$CARGO_TARGET_DIR/bench/fleet.md`.
//! Every process the bench starts is gone when it ends (checked).

#[path = "../support/mod.rs"]
mod support;

#[path = "fleet/http.rs"]
mod http;
#[path = "fleet/informer.rs"]
mod informer;
#[path = "fleet/kubelet.rs"]
mod kubelet;
#[path = "fleet/link.rs"]
mod link;
#[path = "fleet/loops.rs"]
mod loops;
#[path = "fleet/measure.rs"]
mod measure;
#[path = "fleet/opts.rs"]
mod opts;
#[allow(dead_code)]
mod procs;
#[path = "fleet/rig.rs"]
mod rig;
#[path = "fleet/table.rs"]
mod table;

use measure::Figures;
use opts::{CutKind, LinkKind, Settings, System};
use support::netns::NetNs;
use support::pki::Pki;

fn main() {
    // `cargo test --all-targets` runs bench targets without --bench: a
    // benchmark is not a test, do nothing then.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("benchmark skipped outside `cargo bench` (cargo bench --bench fleet)");
        return;
    }
    let settings = match Settings::from_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleet: {e}");
            std::process::exit(2);
        }
    };
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Error)
        .try_init();
    let outcome = std::panic::catch_unwind(|| run(&settings));
    let clean = procs::check_none_left();
    if outcome.is_err() || !clean {
        std::process::exit(1);
    }
}

fn run(s: &Settings) {
    let dir = std::env::temp_dir().join(format!("lite-apiserver-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut pki = Pki::generate(&dir.join("pki"));
    let ns = make_link(s);
    if let Some(ns) = &ns {
        pki.reissue_upstream_with_ips(&[ns.upstream_host.into()]);
    }
    let s = &Settings {
        link: if ns.is_some() {
            LinkKind::Netns
        } else {
            LinkKind::Relay
        },
        ..s.clone()
    };
    let ids = rig::identities(&pki, s.nodes);
    eprintln!(
        "fleet: {} nodes, link {:?}, binary {}",
        s.nodes,
        s.link,
        s.binary.display()
    );
    let mut direct = Figures::default();
    let mut lite = Figures::default();
    for sys in &s.systems {
        let sub = dir.join(format!("{sys:?}").to_lowercase());
        std::fs::create_dir_all(&sub).unwrap();
        let f = rig::run(*sys, s, &pki, &ids, &sub, ns.as_ref());
        match sys {
            System::Direct => direct = f,
            System::Lite => lite = f,
        }
    }
    table::report(s, &direct, &lite);
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The namespace for `--link netns` (or `auto`, when one can be made and
/// the cut is silence); None for the relay.
fn make_link(s: &Settings) -> Option<NetNs> {
    match s.link {
        LinkKind::Relay => None,
        LinkKind::Auto if s.cut_kind == CutKind::Reset => None,
        LinkKind::Netns => Some(NetNs::create().unwrap_or_else(|e| {
            panic!("--link netns: no network namespace ({e})");
        })),
        LinkKind::Auto => match NetNs::create() {
            Ok(ns) => Some(ns),
            Err(e) => {
                eprintln!("fleet: no network namespace ({e}): the link is a relay");
                None
            }
        },
    }
}
