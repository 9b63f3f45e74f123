//! Flags (argh) validated into a [`Config`] before any port is bound.
//!
//! Every problem is reported as one line naming the flag ([`ConfigError`]);
//! `main` prints it and exits 2. The only thing validation writes is the
//! cache directory, which it must be able to create.

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
        let listen = if flags.listen.is_empty() {
            vec![SocketAddr::from(([127, 0, 0, 1], 51003))]
        } else {
            flags
                .listen
                .iter()
                .map(|a| {
                    a.parse()
                        .map_err(|_| err("--listen", format!("{a:?} is not an IP:PORT address")))
                })
                .collect::<Result<_, _>>()?
        };
        if flags.server.is_empty() {
            return Err(err(
                "--server",
                "at least one upstream URL is required (e.g. https://10.0.0.1:6443)",
            ));
        }
        let servers: Vec<ServerUrl> = flags
            .server
            .iter()
            .map(|s| parse_server(s))
            .collect::<Result<_, _>>()?;
        if flags.ca_file.is_none() && !flags.insecure_skip_tls_verify {
            return Err(err(
                "--ca-file",
                "required to verify the upstream (or pass --insecure-skip-tls-verify)",
            ));
        }
        if let Some(ca) = &flags.ca_file {
            check_pem(ca, "--ca-file", PemKind::Certs)?;
        }
        let tls_cert_file = flags
            .tls_cert_file
            .ok_or_else(|| err("--tls-cert-file", "a serving certificate is required"))?;
        let tls_private_key_file = flags.tls_private_key_file.ok_or_else(|| {
            err(
                "--tls-private-key-file",
                "a serving private key is required",
            )
        })?;
        check_pem(&tls_cert_file, "--tls-cert-file", PemKind::Certs)?;
        check_pem(
            &tls_private_key_file,
            "--tls-private-key-file",
            PemKind::Key,
        )?;
        if let Some(ca) = &flags.client_ca_file {
            check_pem(ca, "--client-ca-file", PemKind::Certs)?;
        }
        let identities = flags
            .identity
            .iter()
            .map(|i| parse_identity(i))
            .collect::<Result<_, _>>()?;
        let cache_agents: Vec<String> = flags
            .cache_agents
            .split(',')
            .map(|a| a.trim().to_ascii_lowercase())
            .filter(|a| !a.is_empty())
            .collect();
        let cache_ttl = parse_duration(&flags.cache_ttl).map_err(|p| err("--cache-ttl", p))?;
        if flags.health_interval == 0 {
            return Err(err("--health-interval", "must be at least 1 second"));
        }
        if flags.upstream_timeout == 0 {
            return Err(err("--upstream-timeout", "must be at least 1 second"));
        }
        let proxy = choose_proxy(flags.proxy.as_deref(), &servers, env)?;
        let admin_listen =
            match flags.admin_listen.trim() {
                "" => None,
                a => Some(a.parse().map_err(|_| {
                    err("--admin-listen", format!("{a:?} is not an IP:PORT address"))
                })?),
            };
        if flags.max_connections == 0 {
            return Err(err("--max-connections", "must be at least 1"));
        }
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
            cache_agents,
            cache_ttl,
            health_interval: Duration::from_secs(flags.health_interval),
            upstream_timeout: Duration::from_secs(flags.upstream_timeout),
            proxy,
            admin_listen,
            max_connections: flags.max_connections,
            verbosity: flags.verbose.clamp(0, 3) as u8,
        })
    }
}

/// Parses `https://host[:port][/prefix]`.
fn parse_server(url: &str) -> Result<ServerUrl, ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| err("--server", format!("{url:?} must be an https:// URL")))?;
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (host, port) = split_host_port(authority, 443)
        .ok_or_else(|| err("--server", format!("{url:?} has no valid host[:port]")))?;
    let path_prefix = path.trim_end_matches('/');
    let path_prefix = if path_prefix.is_empty() {
        String::new()
    } else {
        format!("/{path_prefix}")
    };
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(ServerUrl {
        host,
        port,
        authority,
        path_prefix,
    })
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host.to_owned(), port.parse().ok()?))
        }
        Some(_) => None,
        None => Some((authority.to_owned(), default_port)),
    }
}

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

/// `--proxy`, else `HTTPS_PROXY`/`https_proxy` unless `NO_PROXY` covers
/// every server.
fn choose_proxy(
    flag: Option<&str>,
    servers: &[ServerUrl],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProxyUrl>, ConfigError> {
    if let Some(url) = flag {
        return parse_proxy(url, "--proxy").map(Some);
    }
    let Some(url) = env("HTTPS_PROXY")
        .or_else(|| env("https_proxy"))
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(None);
    };
    let no_proxy = env("NO_PROXY")
        .or_else(|| env("no_proxy"))
        .unwrap_or_default();
    if servers.iter().all(|s| no_proxy_matches(&no_proxy, &s.host)) {
        return Ok(None);
    }
    parse_proxy(&url, "--proxy").map(Some)
}

fn parse_proxy(url: &str, flag: &'static str) -> Result<ProxyUrl, ConfigError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        err(
            flag,
            format!("{url:?} must be an http:// URL of a CONNECT proxy"),
        )
    })?;
    let authority = rest.split('/').next().unwrap_or("");
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .map_or((None, authority), |(u, h)| (Some(u), h));
    let (host, port) = split_host_port(hostport, 80)
        .ok_or_else(|| err(flag, format!("{url:?} has no valid host[:port]")))?;
    let authorization = userinfo.map(|u| format!("Basic {}", base64(u.as_bytes())));
    Ok(ProxyUrl {
        host,
        port,
        authorization,
    })
}

/// Whether `NO_PROXY` (comma list: `*`, exact host, `.suffix`, `suffix`)
/// covers `host`.
pub fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .any(|entry| {
            let entry = entry.split(':').next().unwrap_or("").to_owned();
            if entry.is_empty() {
                return false;
            }
            if entry == "*" || entry == host {
                return true;
            }
            let suffix = entry.trim_start_matches('.');
            host.ends_with(&format!(".{suffix}"))
        })
}

/// Standard base64 with padding (for Basic proxy credentials).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let cases = [
            (
                "https://10.0.0.1:6443",
                Some(("10.0.0.1", 6443, "10.0.0.1:6443", "")),
            ),
            (
                "https://cloud.example",
                Some(("cloud.example", 443, "cloud.example:443", "")),
            ),
            (
                "https://cloud.example:8443/k8s/",
                Some(("cloud.example", 8443, "cloud.example:8443", "/k8s")),
            ),
            ("https://[::1]:6443", Some(("::1", 6443, "[::1]:6443", ""))),
            ("http://10.0.0.1:6443", None),
            ("https://:6443", None),
            ("https://host:notaport", None),
            ("https://user@host", None),
        ];
        for (url, want) in cases {
            let got = parse_server(url).ok();
            let got = got.as_ref().map(|s| {
                (
                    s.host.as_str(),
                    s.port,
                    s.authority.as_str(),
                    s.path_prefix.as_str(),
                )
            });
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn durations() {
        let cases = [
            ("7d", Some(604_800)),
            ("12h", Some(43_200)),
            ("30m", Some(1_800)),
            ("45s", Some(45)),
            ("90", Some(90)),
            ("0", None),
            ("1w", None),
            ("", None),
            ("d", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_secs()),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn no_proxy_rules() {
        let cases = [
            ("*", "a.example", true),
            ("a.example", "a.example", true),
            (".example", "a.example", true),
            ("example", "a.example", true),
            ("example", "notexample", false),
            ("10.0.0.1", "10.0.0.1", true),
            ("10.0.0.1:6443", "10.0.0.1", true),
            ("", "a", false),
            ("b.example, c.example", "c.example", true),
        ];
        for (rule, host, want) in cases {
            assert_eq!(no_proxy_matches(rule, host), want, "{rule} {host}");
        }
    }

    #[test]
    fn proxy_urls() {
        let p = parse_proxy("http://user:pw@proxy.local:3128", "--proxy").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.local", 3128));
        assert_eq!(p.authorization.as_deref(), Some("Basic dXNlcjpwdw=="));
        assert!(parse_proxy("https://proxy", "--proxy").is_err());
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn env_proxy_respects_no_proxy() {
        let servers = vec![parse_server("https://10.0.0.1:6443").unwrap()];
        let env = |k: &str| match k {
            "HTTPS_PROXY" => Some("http://proxy:3128".to_owned()),
            "NO_PROXY" => Some("10.0.0.1".to_owned()),
            _ => None,
        };
        assert_eq!(choose_proxy(None, &servers, &env).unwrap(), None);
        let env2 = |k: &str| (k == "https_proxy").then(|| "http://proxy:3128".to_owned());
        assert_eq!(
            choose_proxy(None, &servers, &env2).unwrap().map(|p| p.port),
            Some(3128)
        );
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let env = |_: &str| None;
        let run = |args: &[&str]| {
            let mut v = vec!["lite-apiserver".to_owned()];
            v.extend(args.iter().map(|s| s.to_string()));
            match Config::from_args(&v, &env) {
                Err(Exit::Error(e)) => e.to_string(),
                Err(Exit::Help(_)) => "help".to_owned(),
                Err(Exit::Version(v)) => v,
                Ok(_) => "ok".to_owned(),
            }
        };
        assert!(run(&[]).starts_with("--server:"));
        assert!(run(&["--server", "http://x"]).starts_with("--server:"));
        assert!(run(&["--server", "https://x"]).starts_with("--ca-file:"));
        assert!(
            run(&["--server", "https://x", "--ca-file", "/nonexistent.pem"])
                .starts_with("--ca-file:")
        );
        assert!(run(&["--bogus"]).contains("--bogus"));
        assert!(run(&["--listen", "nope", "--server", "https://x"]).starts_with("--listen:"));
        assert_eq!(run(&["--help"]), "help");
        assert!(run(&["--version"]).starts_with("lite-apiserver "));
    }
}
