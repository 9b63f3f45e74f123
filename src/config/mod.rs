//! Flags (argh) validated into a [`Config`] before any port is bound.
//!
//! Every problem is reported as one line naming the flag ([`ConfigError`]);
//! `main` prints it and exits 2. The only thing validation writes is the
//! cache directory, which it must be able to create.

mod urls;

pub use urls::no_proxy_matches;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argh::FromArgs;

/// Node-local caching reverse proxy for the Kubernetes API (edge autonomy).
#[derive(FromArgs, Debug)]
struct Flags {
    /// TLS listen address, repeatable [127.0.0.1:51003]
    #[argh(option)]
    listen: Vec<String>,
    /// upstream kube-apiserver URL (https://host[:port][/prefix]), repeatable; failover in order
    #[argh(option)]
    server: Vec<String>,
    /// PEM bundle of the cluster CA that verifies the upstream
    #[argh(option)]
    ca_file: Option<PathBuf>,
    /// do not verify the upstream's certificate (insecure; logs a warning)
    #[argh(switch)]
    insecure_skip_tls_verify: bool,
    /// PEM serving certificate chain
    #[argh(option)]
    tls_cert_file: Option<PathBuf>,
    /// PEM serving private key
    #[argh(option)]
    tls_private_key_file: Option<PathBuf>,
    /// PEM CA bundle that verifies client certificates (requested, not required)
    #[argh(option)]
    client_ca_file: Option<PathBuf>,
    /// CERT,KEY client certificate and key used upstream for callers whose verified cert has the same CN; repeatable
    #[argh(option)]
    identity: Vec<String>,
    /// cache directory [/etc/kubernetes/cache]
    #[argh(option, default = "PathBuf::from(\"/etc/kubernetes/cache\")")]
    cache_dir: PathBuf,
    /// comma-separated agents whose answers are cached, * for all [kubelet,kube-proxy,flanneld,coredns]
    #[argh(
        option,
        default = "String::from(\"kubelet,kube-proxy,flanneld,coredns\")"
    )]
    cache_agents: String,
    /// remove entries not read for this long (e.g. 7d, 12h, 30m, 45s) [7d]
    #[argh(option, default = "String::from(\"7d\")")]
    cache_ttl: String,
    /// seconds between upstream health probes [5]
    #[argh(option, default = "5")]
    health_interval: u64,
    /// seconds allowed for dial + TLS handshake upstream [3]
    #[argh(option, default = "3")]
    upstream_timeout: u64,
    /// HTTP CONNECT proxy URL to reach the upstream [from HTTPS_PROXY, honouring NO_PROXY]
    #[argh(option)]
    proxy: Option<String>,
    /// plain-HTTP admin address for /healthz, /readyz, /metrics; empty disables [127.0.0.1:51004]
    #[argh(option, default = "String::from(\"127.0.0.1:51004\")")]
    admin_listen: String,
    /// most client connections at once [1024]
    #[argh(option, default = "1024")]
    max_connections: usize,
    /// IP:PORT (e.g. 169.254.2.1:10268) to serve InClusterConfig pods on; created on a dummy interface if missing, and shown to kubelet as the default/kubernetes Service
    #[argh(option)]
    incluster_address: Option<String>,
    /// NS/NAME of a ConfigMap whose key cache_agents adds agents to cache, followed live; empty or none disables [kube-system/lite-apiserver]
    #[argh(option, default = "String::from(\"kube-system/lite-apiserver\")")]
    cache_agents_configmap: String,
    /// when the cloud returns, held offline watches end spread uniformly over this long (e.g. 5s, 0 for at once) [5s]
    #[argh(option, default = "String::from(\"5s\")")]
    resume_spread: String,
    /// close pooled upstream connections unused for this long (e.g. 30s, 2m) [30s]
    #[argh(option, default = "String::from(\"30s\")")]
    upstream_idle_timeout: String,
    /// new upstream connections per second after a burst of as many; 0 for unpaced [20]
    #[argh(option, default = "20")]
    dial_rate: u32,
    /// threads serving client connections; the first 8 connections stay on the main one [CPUs, at most 4]
    #[argh(option)]
    workers: Option<usize>,
    /// more logging (-v debug, -vv trace); RUST_LOG overrides
    #[argh(switch, short = 'v')]
    verbose: i32,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

/// An upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// Host name or IP (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// `host:port` as sent in `Host`.
    pub authority: String,
    /// Path prefix without a trailing `/` (usually empty).
    pub path_prefix: String,
}

/// An HTTP CONNECT proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `Proxy-Authorization` value from the URL's user info (Basic).
    pub authorization: Option<String>,
}

/// A client identity: certificate chain and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// TLS listeners.
    pub listen: Vec<SocketAddr>,
    /// Upstream servers, in failover order.
    pub servers: Vec<ServerUrl>,
    /// Cluster CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Skip upstream verification.
    pub insecure_skip_tls_verify: bool,
    /// Serving certificate chain.
    pub tls_cert_file: PathBuf,
    /// Serving key.
    pub tls_private_key_file: PathBuf,
    /// CA bundle for client certificates.
    pub client_ca_file: Option<PathBuf>,
    /// Upstream identities.
    pub identities: Vec<IdentityFiles>,
    /// Cache directory.
    pub cache_dir: PathBuf,
    /// Cached agents (`*` = all).
    pub cache_agents: Vec<String>,
    /// GC age.
    pub cache_ttl: Duration,
    /// Probe interval.
    pub health_interval: Duration,
    /// Dial + TLS timeout.
    pub upstream_timeout: Duration,
    /// CONNECT proxy.
    pub proxy: Option<ProxyUrl>,
    /// Admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// Connection cap.
    pub max_connections: usize,
    /// Where InClusterConfig pods reach us.
    pub incluster_address: Option<SocketAddr>,
    /// The ConfigMap (namespace, name) that adds cached agents.
    pub cache_agents_configmap: Option<(String, String)>,
    /// Window over which held offline watches end when the cloud returns.
    pub resume_spread: Duration,
    /// Pooled connections unused this long are closed.
    pub upstream_idle_timeout: Duration,
    /// New upstream connections per second (0: unpaced).
    pub dial_rate: u32,
    /// Threads serving client connections (the main one included).
    pub workers: usize,
    /// 0 info, 1 debug, 2+ trace.
    pub verbosity: u8,
}

/// Why the program should exit instead of running.
#[derive(Debug)]
pub enum Exit {
    /// `--help`: print to stdout, exit 0.
    Help(String),
    /// `--version`: print to stdout, exit 0.
    Version(String),
    /// A bad flag or file: one line on stderr, exit 2.
    Error(ConfigError),
}

/// A flag and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag, e.g. `--server`.
    pub flag: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.flag.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.flag, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        problem: problem.into(),
    }
}

impl Config {
    /// Parses `args` (program name first) with `env` for environment look-ups.
    pub fn from_args(
        args: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Exit> {
        let cmd = "lite-apiserver";
        let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
        let flags = match Flags::from_args(&[cmd], &rest) {
            Ok(flags) => flags,
            Err(early) if early.status.is_ok() => return Err(Exit::Help(early.output)),
            Err(early) => {
                let line = early
                    .output
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim()
                    .to_owned();
                return Err(Exit::Error(err("", format!("{line} (see --help)"))));
            }
        };
        if flags.version {
            return Err(Exit::Version(format!(
                "lite-apiserver {}",
                env!("CARGO_PKG_VERSION")
            )));
        }
        Config::validate(flags, env).map_err(Exit::Error)
    }

    fn validate(flags: Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let listen = listen_addresses(&flags.listen)?;
        let servers = servers(&flags.server)?;
        check_trust(&flags)?;
        let (tls_cert_file, tls_private_key_file) = serving_files(&flags)?;
        let identities = flags
            .identity
            .iter()
            .map(|i| parse_identity(i))
            .collect::<Result<_, _>>()?;
        let proxy = urls::choose_proxy(flags.proxy.as_deref(), &servers, env)?;
        let admin_listen = match flags.admin_listen.trim() {
            "" => None,
            a => Some(address("--admin-listen", a)?),
        };
        let incluster_address = flags
            .incluster_address
            .as_deref()
            .map(|a| address("--incluster-address", a))
            .transpose()?;
        let cache_ttl = parse_duration(&flags.cache_ttl).map_err(|p| err("--cache-ttl", p))?;
        let health_interval = seconds("--health-interval", flags.health_interval)?;
        let upstream_timeout = seconds("--upstream-timeout", flags.upstream_timeout)?;
        let max_connections = at_least_one("--max-connections", flags.max_connections)?;
        let workers = worker_count(flags.workers)?;
        let cache_agents_configmap = configmap_ref(&flags.cache_agents_configmap)?;
        let resume_spread = parse_spread(&flags.resume_spread)?;
        let upstream_idle_timeout = parse_duration(&flags.upstream_idle_timeout)
            .map_err(|p| err("--upstream-idle-timeout", p))?;
        // Last: the only thing validation writes, once everything else passed.
        create_cache_dir(&flags.cache_dir)?;
        Ok(Config {
            listen,
            servers,
            ca_file: flags.ca_file,
            insecure_skip_tls_verify: flags.insecure_skip_tls_verify,
            tls_cert_file,
            tls_private_key_file,
            client_ca_file: flags.client_ca_file,
            identities,
            cache_dir: flags.cache_dir,
            cache_agents: agent_list(&flags.cache_agents),
            cache_ttl,
            health_interval,
            upstream_timeout,
            proxy,
            admin_listen,
            max_connections,
            incluster_address,
            cache_agents_configmap,
            resume_spread,
            upstream_idle_timeout,
            dial_rate: flags.dial_rate,
            workers,
            verbosity: flags.verbose.clamp(0, 3) as u8,
        })
    }
}

/// `--listen`, or the loopback default.
fn listen_addresses(flags: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    if flags.is_empty() {
        return Ok(vec![SocketAddr::from(([127, 0, 0, 1], 51003))]);
    }
    flags.iter().map(|a| address("--listen", a)).collect()
}

fn address(flag: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.trim()
        .parse()
        .map_err(|_| err(flag, format!("{text:?} is not an IP:PORT address")))
}

fn servers(flags: &[String]) -> Result<Vec<ServerUrl>, ConfigError> {
    if flags.is_empty() {
        return Err(err(
            "--server",
            "at least one upstream URL is required (e.g. https://10.0.0.1:6443)",
        ));
    }
    flags.iter().map(|s| urls::parse_server(s)).collect()
}

/// The upstream is verified unless the operator says otherwise; every CA
/// bundle named must load.
fn check_trust(flags: &Flags) -> Result<(), ConfigError> {
    if flags.ca_file.is_none() && !flags.insecure_skip_tls_verify {
        return Err(err(
            "--ca-file",
            "required to verify the upstream (or pass --insecure-skip-tls-verify)",
        ));
    }
    if let Some(ca) = &flags.ca_file {
        check_pem(ca, "--ca-file", PemKind::Certs)?;
    }
    if let Some(ca) = &flags.client_ca_file {
        check_pem(ca, "--client-ca-file", PemKind::Certs)?;
    }
    Ok(())
}

/// The serving certificate and key, both required and loadable.
fn serving_files(flags: &Flags) -> Result<(PathBuf, PathBuf), ConfigError> {
    let cert = flags
        .tls_cert_file
        .clone()
        .ok_or_else(|| err("--tls-cert-file", "a serving certificate is required"))?;
    let key = flags.tls_private_key_file.clone().ok_or_else(|| {
        err(
            "--tls-private-key-file",
            "a serving private key is required",
        )
    })?;
    check_pem(&cert, "--tls-cert-file", PemKind::Certs)?;
    check_pem(&key, "--tls-private-key-file", PemKind::Key)?;
    Ok((cert, key))
}

/// A comma-separated agent list, lower-cased (`*`: all).
pub fn agent_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
        .collect()
}

fn seconds(flag: &'static str, secs: u64) -> Result<Duration, ConfigError> {
    match secs {
        0 => Err(err(flag, "must be at least 1 second")),
        s => Ok(Duration::from_secs(s)),
    }
}

fn at_least_one(flag: &'static str, n: usize) -> Result<usize, ConfigError> {
    match n {
        0 => Err(err(flag, "must be at least 1")),
        n => Ok(n),
    }
}

/// Most `--workers`.
pub const MAX_WORKERS: usize = 64;

/// `--workers`, or as many as CPUs up to 4 (beyond that the one I/O
/// reactor thread is the limit).
fn worker_count(flag: Option<usize>) -> Result<usize, ConfigError> {
    match flag {
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get().min(4))),
        Some(n @ 1..=MAX_WORKERS) => Ok(n),
        Some(_) => Err(err("--workers", "must be 1 to 64")),
    }
}

/// `NS/NAME` of the cache-agents ConfigMap; empty or `none` disables.
fn configmap_ref(text: &str) -> Result<Option<(String, String)>, ConfigError> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    match text.split_once('/') {
        Some((ns, name)) if valid(ns) && valid(name) => Ok(Some((ns.to_owned(), name.to_owned()))),
        _ => Err(err(
            "--cache-agents-configmap",
            format!("{text:?} is not NAMESPACE/NAME (or empty, or none, to disable)"),
        )),
    }
}

/// `--resume-spread`: a duration, `0` for none.
fn parse_spread(text: &str) -> Result<Duration, ConfigError> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text).map_err(|p| err("--resume-spread", p))
}

/// `--identity CERT,KEY`: both files must load.
fn parse_identity(value: &str) -> Result<IdentityFiles, ConfigError> {
    let (cert, key) = value
        .split_once(',')
        .ok_or_else(|| err("--identity", format!("{value:?} must be CERT,KEY")))?;
    let files = IdentityFiles {
        cert: PathBuf::from(cert.trim()),
        key: PathBuf::from(key.trim()),
    };
    check_pem(&files.cert, "--identity", PemKind::Certs)?;
    check_pem(&files.key, "--identity", PemKind::Key)?;
    Ok(files)
}

/// Parses `7d`, `12h`, `30m`, `45s` or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 7d, 12h, 30m or 45s"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3_600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?} is not a duration like 7d, 12h, 30m or 45s"))?;
    if secs == 0 {
        return Err("must be longer than 0".to_owned());
    }
    Ok(Duration::from_secs(secs))
}

/// What a PEM file must contain.
#[derive(Clone, Copy)]
enum PemKind {
    Certs,
    Key,
}

fn check_pem(path: &Path, flag: &'static str, kind: PemKind) -> Result<(), ConfigError> {
    let what = match kind {
        PemKind::Certs => crate::pem::load_certs(path).map(|_| ()),
        PemKind::Key => crate::pem::load_key(path).map(|_| ()),
    };
    what.map_err(|e| err(flag, e.to_string()))
}

fn create_cache_dir(dir: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            err(
                "--cache-dir",
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            err(
                "--cache-dir",
                format!("{} is not writable: {e}", dir.display()),
            )
        })
}

#[cfg(test)]
mod tests;
