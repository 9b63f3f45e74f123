//! URLs on the command line: `--server` (https), `--proxy` (an HTTP CONNECT
//! proxy, or `HTTPS_PROXY` unless `NO_PROXY` covers every server).

use super::{err, ConfigError, ProxyUrl, ServerUrl};

/// Parses `https://host[:port][/prefix]`.
pub(super) fn parse_server(url: &str) -> Result<ServerUrl, ConfigError> {
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
pub(super) fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
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

/// `--proxy`, else `HTTPS_PROXY`/`https_proxy` unless `NO_PROXY` covers
/// every server.
pub(super) fn choose_proxy(
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

pub(super) fn parse_proxy(url: &str, flag: &'static str) -> Result<ProxyUrl, ConfigError> {
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
pub(super) fn base64(input: &[u8]) -> String {
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

