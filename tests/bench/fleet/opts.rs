//! The bench's options: `cargo bench --bench fleet -- [OPTIONS]`, each
//! also settable by an environment variable (the flag wins).
//!
//! ```text
//! --nodes N           FLEET_NODES          lite-apiserver processes / fake kubelets [50]
//! --start-secs S      FLEET_START_SECS     the start window after the kubelets start [20]
//! --steady-secs S     FLEET_STEADY_SECS    the steady window [30]
//! --cut-secs S        FLEET_CUT_SECS       how long the link is down [60]
//! --heal-secs S       FLEET_HEAL_SECS      the window after the link returns [60]
//! --cut silence|reset FLEET_CUT            silence (no RST; a regional outage) or a reset [silence]
//! --link auto|netns|relay FLEET_LINK       the cuttable link: a network namespace's veth link,
//!                                          or a userspace relay; auto: netns when one can be
//!                                          made and the cut is silence, else relay [auto]
//! --only direct|lite  FLEET_ONLY           run one side only
//! --lite-arg 'ARGS'   FLEET_LITE_ARGS      extra lite-apiserver flags (split at spaces), repeatable
//! --binary PATH       FLEET_BINARY         the lite-apiserver to run [the one cargo built:
//!                                          target/release/lite-apiserver under `cargo bench`]
//! --quick                                  smoke preset: 5 nodes, windows 10/10/10/20 s
//! --dump                                   also write every request the double saw
//!                                          (TARGET/bench/fleet-requests-SYSTEM.txt)
//! ```
//! `--health-interval` and the other lite-apiserver flags keep their
//! defaults unless given with `--lite-arg`.

use std::path::PathBuf;
use std::time::Duration;

use crate::kubelet::Schedule;

/// Which side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// The fake kubelets talk to the double through the link.
    Direct,
    /// Each fake kubelet talks to its own lite-apiserver, which talks to
    /// the double through the link.
    Lite,
}

impl System {
    pub fn label(self) -> &'static str {
        match self {
            System::Direct => "direct",
            System::Lite => "behind lite-apiserver",
        }
    }
}

/// How the link fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutKind {
    /// Packets stop, no RST, connections from before stay dead.
    Silence,
    /// Every connection reset, new dials refused.
    Reset,
}

/// What the cuttable link is (see [`crate::link`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Auto,
    Netns,
    Relay,
}

/// The bench's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub nodes: usize,
    pub start: Duration,
    pub steady: Duration,
    pub cut: Duration,
    pub heal: Duration,
    pub cut_kind: CutKind,
    pub link: LinkKind,
    pub systems: Vec<System>,
    pub lite_args: Vec<String>,
    /// Write every request the double saw to `fleet-requests-SYSTEM.txt`.
    pub dump: bool,
    /// The lite-apiserver binary.
    pub binary: PathBuf,
    /// The fake kubelets' schedule (kubelet's defaults; tests shorten it).
    pub schedule: Schedule,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    /// From the command line and the environment.
    pub fn from_args(args: &[String]) -> Result<Settings, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let d = |full: u64, smoke: u64| if quick { smoke } else { full };
        let mut s = Settings {
            nodes: env_or("FLEET_NODES", d(50, 5)) as usize,
            start: Duration::from_secs(env_or("FLEET_START_SECS", d(20, 10))),
            steady: Duration::from_secs(env_or("FLEET_STEADY_SECS", d(30, 10))),
            cut: Duration::from_secs(env_or("FLEET_CUT_SECS", d(60, 10))),
            heal: Duration::from_secs(env_or("FLEET_HEAL_SECS", d(60, 20))),
            cut_kind: CutKind::Silence,
            link: LinkKind::Auto,
            systems: vec![System::Direct, System::Lite],
            lite_args: std::env::var("FLEET_LITE_ARGS")
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            dump: args.iter().any(|a| a == "--dump"),
            binary: std::env::var_os("FLEET_BINARY")
                .map(PathBuf::from)
                .unwrap_or_else(crate::support::daemon::binary),
            schedule: Schedule::default(),
        };
        if let Ok(v) = std::env::var("FLEET_CUT") {
            s.set("--cut", &v)?;
        }
        if let Ok(v) = std::env::var("FLEET_LINK") {
            s.set("--link", &v)?;
        }
        if let Ok(v) = std::env::var("FLEET_ONLY") {
            s.set("--only", &v)?;
        }
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
                _ => (a.as_str(), None),
            };
            if !Settings::takes_value(flag) {
                continue; // --bench, --quick, and whatever cargo adds
            }
            let value = match inline {
                Some(v) => v,
                None => it.next().ok_or(format!("{flag} needs a value"))?.clone(),
            };
            s.set(flag, &value)?;
        }
        if s.nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        if s.link == LinkKind::Netns && s.cut_kind == CutKind::Reset {
            return Err("--cut reset needs --link relay".into());
        }
        if s.systems.contains(&System::Lite) && !s.binary.is_file() {
            return Err(format!("no lite-apiserver at {}", s.binary.display()));
        }
        Ok(s)
    }

    fn takes_value(flag: &str) -> bool {
        matches!(
            flag,
            "--nodes"
                | "--start-secs"
                | "--steady-secs"
                | "--cut-secs"
                | "--heal-secs"
                | "--cut"
                | "--only"
                | "--lite-arg"
                | "--binary"
                | "--link"
        )
    }

    fn set(&mut self, flag: &str, v: &str) -> Result<(), String> {
        let secs = || {
            v.parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| format!("{flag}: not a number of seconds: {v:?}"))
        };
        match flag {
            "--nodes" => self.nodes = v.parse().map_err(|_| format!("--nodes: {v:?}"))?,
            "--start-secs" => self.start = secs()?,
            "--steady-secs" => self.steady = secs()?,
            "--cut-secs" => self.cut = secs()?,
            "--heal-secs" => self.heal = secs()?,
            "--cut" => {
                self.cut_kind = match v {
                    "silence" => CutKind::Silence,
                    "reset" => CutKind::Reset,
                    _ => return Err(format!("--cut: silence or reset, not {v:?}")),
                }
            }
            "--only" => {
                self.systems = match v {
                    "direct" => vec![System::Direct],
                    "lite" => vec![System::Lite],
                    _ => return Err(format!("--only: direct or lite, not {v:?}")),
                }
            }
            "--lite-arg" => self
                .lite_args
                .extend(v.split_whitespace().map(str::to_owned)),
            "--binary" => self.binary = PathBuf::from(v),
            "--link" => {
                self.link = match v {
                    "auto" => LinkKind::Auto,
                    "netns" => LinkKind::Netns,
                    "relay" => LinkKind::Relay,
                    _ => return Err(format!("--link: auto, netns or relay, not {v:?}")),
                }
            }
            _ => {}
        }
        Ok(())
    }
}
