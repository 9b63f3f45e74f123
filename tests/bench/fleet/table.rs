//! The fleet report: the table (direct against behind
//! lite-apiserver, ratios, goals), the requests of each window by kind,
//! what the kubelets saw; printed and written to `TARGET/bench/fleet.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::measure::{Breakdown, Figures};
use crate::opts::{CutKind, LinkKind, Settings};

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(lite: f64, direct: f64) -> String {
    if direct > 0.0 {
        format!("{:.2}", lite / direct)
    } else {
        "-".to_owned()
    }
}

fn delay(d: (Option<Duration>, usize), nodes: usize, window: f64) -> String {
    match d {
        (Some(d), _) => format!("{:.1} s", d.as_secs_f64()),
        (None, reached) => format!("> {window:.0} s ({reached} of {nodes})"),
    }
}

/// One row: metric, direct, lite, ratio, goal (and whether it is met).
fn row(out: &mut String, metric: &str, d: &str, l: &str, ratio: &str, goal: &str) {
    let _ = writeln!(out, "| {metric} | {d} | {l} | {ratio} | {goal} |");
}

fn goal_ratio(lite: f64, direct: f64, max: f64) -> String {
    let met = direct > 0.0 && lite <= direct * max;
    format!("<= {max}x: {}", if met { "met" } else { "NOT met" })
}

/// The main table: costs, then convergence.
fn main_table(out: &mut String, s: &Settings, d: &Figures, l: &Figures) {
    let n = d.nodes.max(l.nodes);
    let _ = writeln!(
        out,
        "| per fleet of {n} | direct | behind lite-apiserver | lite/direct | goal |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    costs(out, s, d, l);
    heal_costs(out, d, l);
    convergence(out, d, l);
}

/// Connections, steady and start requests.
fn costs(out: &mut String, s: &Settings, d: &Figures, l: &Figures) {
    let n = d.nodes.max(l.nodes);
    let (dh, lh) = (d.held_steady as f64, l.held_steady as f64);
    let h2 = format!("(a real direct kubelet: {n}, HTTP/2, one per node)");
    row(
        out,
        "upstream connections held (steady)",
        &d.held_steady.to_string(),
        &l.held_steady.to_string(),
        &ratio(lh, dh),
        &h2,
    );
    let (ds, ls) = (d.steady_rate(), l.steady_rate());
    let metric = format!(
        "steady requests/s (over {:.0} s)",
        l.steady_secs.max(d.steady_secs)
    );
    let lite = format!("{} ({} probes/s)", num(ls), num(l.steady_probe_rate()));
    row(
        out,
        &metric,
        &num(ds),
        &lite,
        &ratio(ls, ds),
        &goal_ratio(ls, ds, 1.2),
    );
    let (dst, lst) = (d.start.total as f64, l.start.total as f64);
    let metric = format!(
        "requests at fleet start (until {:.0} s after the kubelets start; windows {:.0} s / {:.0} s)",
        s.start.as_secs_f64(),
        d.start_secs,
        l.start_secs
    );
    let lite = format!(
        "{} ({} probes; {} LISTs)",
        num(lst),
        l.start.probes(),
        l.start.lists
    );
    row(
        out,
        &metric,
        &num(dst),
        &lite,
        &ratio(lst, dst),
        &goal_ratio(lst, dst, 1.2),
    );
    let (dsh, lsh) = (d.start_handshakes as f64, l.start_handshakes as f64);
    row(
        out,
        "TLS handshakes at fleet start",
        &num(dsh),
        &num(lsh),
        &ratio(lsh, dsh),
        "",
    );
}

/// The window after the link returns.
fn heal_costs(out: &mut String, d: &Figures, l: &Figures) {
    let heal = l.heal_secs.max(d.heal_secs);
    let (dt, lt) = (d.heal.total as f64, l.heal.total as f64);
    let metric = format!("requests in the {heal:.0} s after the link returns");
    let lite = format!("{} ({} probes)", num(lt), l.heal.probes());
    row(out, &metric, &num(dt), &lite, &ratio(lt, dt), "");
    let (dp, lp) = (d.heal_peak as f64, l.heal_peak as f64);
    let metric = "peak requests/s in that window (1 s buckets)";
    row(
        out,
        metric,
        &num(dp),
        &num(lp),
        &ratio(lp, dp),
        &goal_ratio(lp, dp, 2.0),
    );
    row(
        out,
        "TLS handshakes in that window (accepted, stale dials included)",
        &format!("{} ({})", d.heal_handshakes, d.heal_accepted),
        &format!("{} ({})", l.heal_handshakes, l.heal_accepted),
        &ratio(l.heal_handshakes as f64, d.heal_handshakes as f64),
        "",
    );
}

/// How long until the fleet has caught up after the link returns.
fn convergence(out: &mut String, d: &Figures, l: &Figures) {
    let n = d.nodes.max(l.nodes);
    let heal = l.heal_secs.max(d.heal_secs);
    let met = l.seen.0.is_some_and(|t| t <= Duration::from_secs(10));
    let goal = format!("<= 10 s: {}", if met { "met" } else { "NOT met" });
    let metric = "every kubelet sees a new pod created upstream as the link returns";
    row(
        out,
        metric,
        &delay(d.seen, n, heal),
        &delay(l.seen, n, heal),
        "",
        &goal,
    );
    let metric = "every new pod Running (its status PATCH reaches the double)";
    row(
        out,
        metric,
        &delay(d.running, n, heal),
        &delay(l.running, n, heal),
        "",
        "",
    );
    let metric = "all node Leases renewed after the link returns (PUT reaches the double)";
    row(
        out,
        metric,
        &delay(d.lease, n, heal),
        &delay(l.lease, n, heal),
        "",
        "",
    );
}

fn breakdown_row(out: &mut String, window: &str, system: &str, b: &Breakdown) {
    let _ = writeln!(
        out,
        "| {window} | {system} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        b.total,
        b.readyz,
        b.healthz,
        b.livez,
        b.lists,
        b.watches,
        b.streaming,
        b.gets,
        b.writes,
        b.other
    );
}

/// Requests per window by kind, and what the kubelets saw.
fn details(out: &mut String, d: &Figures, l: &Figures) {
    let _ = writeln!(out, "\nRequests at the double, by kind:\n");
    let _ = writeln!(out, "| window | system | total | /readyz | /healthz | /livez | LIST | WATCH | of which streaming | GET | writes | other |");
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (window, pick) in [
        (
            "start",
            (|f: &Figures| f.start) as fn(&Figures) -> Breakdown,
        ),
        ("steady", |f: &Figures| f.steady),
        ("heal", |f: &Figures| f.heal),
    ] {
        breakdown_row(out, window, "direct", &pick(d));
        breakdown_row(out, window, "lite", &pick(l));
    }
    let _ = writeln!(
        out,
        "\nWhat the fake kubelets saw (client side, whole run):\n"
    );
    for (name, f) in [("direct", d), ("lite", l)] {
        let statuses: Vec<String> = f
            .client_statuses
            .iter()
            .map(|(c, n)| {
                if *c == 0 {
                    format!("transport error: {n}")
                } else {
                    format!("{c}: {n}")
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "- {name}: streaming lists refused with 422: {}; closeAllConns: {}; informers synced: {}; answers {}",
            f.client_422,
            f.close_alls,
            f.synced_informers,
            statuses.join(", ")
        );
    }
}

/// Where the report goes: `$CARGO_TARGET_DIR/bench/fleet.md`, else
/// `target/bench/fleet.md` in the package.
pub fn path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench").join("fleet.md")
}

/// The whole report as Markdown.
pub fn render(s: &Settings, d: &Figures, l: &Figures) -> String {
    let mut out = String::new();
    let cut = match s.cut_kind {
        CutKind::Silence => "silence, no RST",
        CutKind::Reset => "every connection reset",
    };
    let link = match s.link {
        LinkKind::Netns => "a network namespace's veth link",
        _ => "a userspace relay",
    };
    let _ = writeln!(
        out,
        "## Fleet bench: {} nodes; link ({link}) down {} s ({cut}); windows: start {} s, steady {} s, heal {} s; lite-apiserver flags: {}\n",
        s.nodes,
        s.cut.as_secs(),
        s.start.as_secs(),
        s.steady.as_secs(),
        s.heal.as_secs(),
        if s.lite_args.is_empty() { "defaults".to_owned() } else { s.lite_args.join(" ") }
    );
    main_table(&mut out, s, d, l);
    details(&mut out, d, l);
    out
}

/// Prints the report and writes it.
pub fn report(s: &Settings, d: &Figures, l: &Figures) {
    let text = render(s, d, l);
    println!("\n{text}");
    let p = path();
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&p, &text) {
        Ok(()) => println!("report: {}", p.display()),
        Err(e) => eprintln!("could not write {}: {e}", p.display()),
    }
}
