//! Opening one connection to a server: TCP (or an HTTP CONNECT tunnel),
//! socket options, then the TLS handshake, all within `--upstream-timeout`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;
use smol::future::FutureExt;
use smol::net::TcpStream;

use crate::config::{ProxyUrl, ServerUrl};
use crate::http::{Conn, ResponseHead};

/// The transport of an upstream connection.
pub type Transport = futures_rustls::client::TlsStream<TcpStream>;
/// A buffered upstream connection.
pub type UpConn = Conn<Transport>;

/// Why no connection to a server could be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum DialError {
    /// TCP connect, CONNECT or TLS took longer than `--upstream-timeout`.
    Timeout,
    /// TCP connect failed.
    Connect(io::Error),
    /// The CONNECT proxy refused or broke.
    Proxy(String),
    /// The TLS handshake failed (bad certificate, wrong CA, ...).
    Tls(io::Error),
    /// The server's host is not a valid TLS server name.
    BadServerName(String),
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::Timeout => write!(f, "timed out"),
            DialError::Connect(e) => write!(f, "connect: {e}"),
            DialError::Proxy(why) => write!(f, "CONNECT proxy: {why}"),
            DialError::Tls(e) => write!(f, "TLS handshake: {e}"),
            DialError::BadServerName(h) => write!(f, "invalid server name {h:?}"),
        }
    }
}

impl std::error::Error for DialError {}

/// TCP (or CONNECT tunnel), then TLS, within `timeout`.
pub async fn dial(
    target: &ServerUrl,
    proxy: Option<&ProxyUrl>,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Box<UpConn>, DialError> {
    let name = ServerName::try_from(target.host.clone())
        .map_err(|_| DialError::BadServerName(target.host.clone()))?;
    let attempt = async {
        let tcp = match proxy {
            Some(proxy) => connect_via_proxy(proxy, target).await?,
            None => TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(DialError::Connect)?,
        };
        crate::net::tune(&tcp);
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(DialError::Tls)?;
        // Boxed: a TLS connection is large, and a lease moves it around.
        Ok(Box::new(Conn::new(tls)))
    };
    attempt
        .or(async {
            crate::timeout::sleep(timeout).await;
            Err(DialError::Timeout)
        })
        .await
}

/// Opens a tunnel to `target` through an HTTP CONNECT proxy.
async fn connect_via_proxy(proxy: &ProxyUrl, target: &ServerUrl) -> Result<TcpStream, DialError> {
    let tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(DialError::Connect)?;
    crate::net::tune(&tcp);
    let authority = format!("{}:{}", target.host, target.port);
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = Conn::new(tcp);
    conn.write_all(head.as_bytes())
        .await
        .map_err(DialError::Connect)?;
    conn.flush().await.map_err(DialError::Connect)?;
    let res = conn
        .read_head(ResponseHead::parse)
        .await
        .map_err(|e| DialError::Proxy(e.to_string()))?
        .ok_or_else(|| DialError::Proxy("closed before answering CONNECT".to_owned()))?;
    if !(200..300).contains(&res.status) {
        return Err(DialError::Proxy(format!(
            "CONNECT answered {} {}",
            res.status, res.reason
        )));
    }
    let (tcp, rest) = conn.into_parts();
    if !rest.is_empty() {
        return Err(DialError::Proxy(
            "proxy sent bytes before the tunnel was up".to_owned(),
        ));
    }
    Ok(tcp)
}
