//! The seed scenario, narrated: edge autonomy on one machine.
//!
//! `cargo run --release --example demo` starts a kube-apiserver double
//! (TLS, real v1.36 answer shapes) with a few pods and configmaps, starts
//! lite-apiserver in front of it (in this process), reads through it with
//! kubectl, cuts the upstream, reads again from the cache, restarts
//! lite-apiserver while offline (the reboot case), reads again, brings the
//! upstream back, deletes a pod there, and shows the proxy converge. It
//! exits 0 only if every step behaved.

#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lite_apiserver::config::{Config, Exit};
use support::double::{Double, Opts};
use support::kubectl::{Auth, Kubectl};
use support::pki::Pki;

/// lite-apiserver running in this process.
struct Proxy {
    stop: smol::channel::Sender<()>,
    thread: Option<JoinHandle<()>>,
    addrs: Vec<SocketAddr>,
}

impl Proxy {
    fn start(args: &[String]) -> Proxy {
        let mut argv = vec!["lite-apiserver".to_owned()];
        argv.extend_from_slice(args);
        let config = match Config::from_args(&argv, &|_| None) {
            Ok(c) => c,
            Err(Exit::Error(e)) => panic!("demo flags: {e}"),
            Err(_) => panic!("demo flags"),
        };
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let shutdown = async move {
                let _ = stopped.recv().await;
            };
            let result = smol::block_on(lite_apiserver::server::run(config, shutdown, |addrs| {
                let _ = ready_tx.send(addrs.to_vec());
            }));
            if let Err(e) = result {
                eprintln!("lite-apiserver: {e}");
            }
        });
        let addrs = ready
            .recv_timeout(Duration::from_secs(10))
            .expect("lite-apiserver started");
        Proxy {
            stop,
            thread: Some(thread),
            addrs,
        }
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send_blocking(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn online(&self) -> bool {
        let Some(admin) = self.addrs.get(1) else {
            return false;
        };
        let metrics = http_get(*admin, "/metrics");
        metrics
            .lines()
            .any(|l| l == "lite_apiserver_upstream_online 1")
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

struct Steps {
    failed: usize,
}

impl Steps {
    fn check(&mut self, what: &str, ok: bool, detail: &str) {
        if ok {
            println!("  ok   {what}");
        } else {
            self.failed += 1;
            println!("  FAIL {what}\n       {detail}");
        }
    }
}

fn pod_names(k: &Kubectl) -> Result<Vec<String>, String> {
    let out = k.run(&[
        "get",
        "pods",
        "-n",
        "edge",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

fn show(k: &Kubectl, args: &[&str]) -> String {
    let out = k.run(args);
    let text = if out.status.success() {
        out.stdout
    } else {
        out.stderr
    };
    String::from_utf8_lossy(&text).trim_end().to_owned()
}

/// The data of configmap edge/app-config, as kubectl prints it.
fn configmap_data(k: &Kubectl) -> String {
    show(
        k,
        &[
            "get",
            "cm",
            "app-config",
            "-n",
            "edge",
            "-o",
            "jsonpath={.data}",
        ],
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("       | {l}\n")).collect()
}

fn main() -> ExitCode {
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .parse_default_env()
        .try_init();
    let dir = std::env::temp_dir().join(format!("lite-apiserver-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = Pki::generate(&dir.join("pki"));
    let mut steps = Steps { failed: 0 };

    println!("1. A cloud kube-apiserver (a local double) with namespace edge: pods web-1..3, configmap app-config.");
    let mut cloud = Double::start(&pki, Opts::default());
    println!("   serving at {}", cloud.url());

    println!("2. lite-apiserver in front of it, as it runs on an edge node.");
    let cache = dir.join("cache");
    let mut args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--server",
        &cloud.url(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(pki.proxy_flags());
    args.extend(
        [
            "--cache-dir",
            &cache.display().to_string(),
            "--cache-agents",
            "*",
            "--health-interval",
            "1",
        ]
        .map(String::from),
    );
    let mut proxy = Proxy::start(&args);
    let url = format!("https://{}", proxy.addrs[0]);
    println!("   serving at {url}, cache in {}", cache.display());
    let k = Kubectl::new(&url, &pki.ca.pem, Auth::Cert(pki.node.clone()), &dir);

    println!("3. Online: kubectl (as the node, system:node:edge-1) reads through the proxy.");
    print!("{}", indent(&show(&k, &["get", "pods", "-n", "edge"])));
    let online = pod_names(&k);
    steps.check(
        "pods listed through the proxy",
        online.as_deref() == Ok(&["web-1".into(), "web-2".into(), "web-3".into()][..]),
        &format!("{online:?}"),
    );
    let cm = configmap_data(&k);
    steps.check(
        "configmap read through the proxy",
        cm.contains("hello"),
        &cm,
    );
    let entry = cache.join("kubectl/api/v1/namespaces/edge/configmaps/app-config@.json");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !entry.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let header: String = std::fs::read_to_string(&entry)
        .unwrap_or_default()
        .lines()
        .take(8)
        .map(|l| format!("{l}\n"))
        .collect();
    println!(
        "   the cache entry, as `head` shows it ({}):",
        entry.strip_prefix(&dir).unwrap_or(&entry).display()
    );
    print!("{}", indent(&header));

    println!("4. The link to the cloud breaks.");
    cloud.stop();
    let started = Instant::now();
    let offline = pod_names(&k);
    println!("   kubectl get pods answered in {:?}:", started.elapsed());
    print!("{}", indent(&show(&k, &["get", "pods", "-n", "edge"])));
    steps.check(
        "the same pods, from the cache",
        offline == online,
        &format!("{offline:?}"),
    );
    let cm_offline = configmap_data(&k);
    steps.check(
        "the configmap, from the cache",
        cm_offline == cm,
        &cm_offline,
    );
    let write = show(
        &k,
        &["delete", "cm", "app-config", "-n", "edge", "--wait=false"],
    );
    println!("   a write is refused honestly:");
    print!("{}", indent(&write));
    steps.check(
        "writes get 503 ServiceUnavailable",
        write.contains("unreachable"),
        &write,
    );

    println!(
        "5. The node reboots while still offline: lite-apiserver restarts with only its cache."
    );
    proxy.shutdown();
    let mut restart_args = args.clone();
    let listen_at = restart_args
        .iter()
        .position(|a| a == "127.0.0.1:0")
        .unwrap_or(1);
    restart_args[listen_at] = proxy.addrs[0].to_string();
    let started = Instant::now();
    let mut proxy = Proxy::start(&restart_args);
    println!("   restarted in {:?}", started.elapsed());
    let rebooted = pod_names(&k);
    print!("{}", indent(&show(&k, &["get", "pods", "-n", "edge"])));
    steps.check(
        "pods still listed after the reboot",
        rebooted == online,
        &format!("{rebooted:?}"),
    );

    println!("6. The cloud comes back; web-3 is deleted there.");
    cloud.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !proxy.online() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    steps.check(
        "the proxy noticed the cloud is back",
        proxy.online(),
        "still offline after 15 s",
    );
    cloud.delete("/api/v1", "pods", "edge", "web-3");
    let converged = pod_names(&k);
    print!("{}", indent(&show(&k, &["get", "pods", "-n", "edge"])));
    steps.check(
        "the proxy shows the cloud's truth",
        converged.as_deref() == Ok(&["web-1".into(), "web-2".into()][..]),
        &format!("{converged:?}"),
    );
    cloud.stop();
    let after = pod_names(&k);
    steps.check(
        "and its cache converged (offline again: web-3 stays gone)",
        after == converged,
        &format!("{after:?}"),
    );

    proxy.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    if steps.failed == 0 {
        println!("\nEdge autonomy demo: every step behaved.");
        ExitCode::SUCCESS
    } else {
        println!("\nEdge autonomy demo: {} step(s) failed.", steps.failed);
        ExitCode::FAILURE
    }
}
