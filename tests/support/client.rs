//! A small blocking HTTPS client for raw-HTTP tests (edge cases kubectl
//! cannot produce), built on rustls and the crate's own body decoder.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lite_apiserver::http::{BodyDecoder, Decoded, Headers, Parsed, ResponseHead};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::pki::Pair;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get_str(name).map(str::to_owned)
    }
}

/// Client settings.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl Client {
    /// Trusts `ca`; presents `cert` if given.
    pub fn new(addr: SocketAddr, ca: &Path, cert: Option<&Pair>) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match cert {
            Some(pair) => {
                let chain: Vec<_> = CertificateDer::pem_file_iter(&pair.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Client {
            addr,
            config: Arc::new(config),
        }
    }

    fn connect(&self) -> io::Result<Tls> {
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        let conn = rustls::ClientConnection::new(
            self.config.clone(),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // Drive the handshake now so handshake failures surface here.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(tls)
    }

    /// GET with headers.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers, b"")
    }

    /// Any request, on a fresh connection; panics on transport errors.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Any request, on a fresh connection.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut s = self.open(method, path, headers, body)?;
        let mut out = Vec::new();
        while let Some(piece) = s.next_data(Duration::from_secs(120))? {
            out.extend_from_slice(&piece);
        }
        Ok(Response {
            status: s.status,
            headers: s.headers.clone(),
            body: out,
        })
    }

    /// Sends a request and reads the head; the body is read from the stream.
    pub fn open(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Stream> {
        let mut tls = self.connect()?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        let mut has_ua = false;
        for (k, v) in headers {
            has_ua |= k.eq_ignore_ascii_case("user-agent");
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_ua {
            req.push_str("User-Agent: test-client/1.0\r\n");
        }
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        tls.write_all(&bytes)?;
        tls.flush()?;
        let mut buf = Vec::new();
        let head = loop {
            if let Ok(Parsed::Complete(head, used)) = ResponseHead::parse(&buf) {
                buf.drain(..used);
                break head;
            }
            let mut tmp = [0u8; 8192];
            let n = tls.read(&mut tmp)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let framing = head.framing(method).map_err(io::Error::other)?;
        Ok(Stream {
            status: head.status,
            headers: head.headers.clone(),
            tls,
            buf,
            dec: BodyDecoder::new(framing),
            chunked: framing == lite_apiserver::http::Framing::Chunked,
            lines: Vec::new(),
        })
    }
}

/// A response being read (watches).
pub struct Stream {
    pub status: u16,
    pub headers: Headers,
    tls: Tls,
    buf: Vec<u8>,
    dec: BodyDecoder,
    pub chunked: bool,
    lines: Vec<u8>,
}

impl Stream {
    /// The next piece of body; `Ok(None)` at a clean end (terminator or
    /// complete length); an error on timeout or a cut connection.
    pub fn next_data(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.dec.decode(&self.buf).map_err(io::Error::other)? {
                Decoded::Data { start, end } => {
                    let piece = self.buf[start..end].to_vec();
                    self.buf.drain(..end);
                    return Ok(Some(piece));
                }
                Decoded::Skip(n) => {
                    self.buf.drain(..n);
                }
                Decoded::Done(n) => {
                    self.buf.drain(..n);
                    return Ok(None);
                }
                Decoded::NeedMore => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    self.tls.sock.set_read_timeout(Some(left))?;
                    let mut tmp = [0u8; 16384];
                    let n = match self.tls.read(&mut tmp) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                        Err(e) => return Err(e),
                    };
                    if n == 0 {
                        self.dec.finish_at_eof().map_err(io::Error::other)?;
                        return Ok(None);
                    }
                    self.buf.extend_from_slice(&tmp[..n]);
                }
            }
        }
    }

    /// Writes raw bytes (after an upgrade).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// Reads whatever raw bytes arrive next (after an upgrade).
    pub fn read_raw(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        if !self.buf.is_empty() {
            return Ok(std::mem::take(&mut self.buf));
        }
        self.tls.sock.set_read_timeout(Some(timeout))?;
        let mut tmp = [0u8; 16384];
        let n = self.tls.read(&mut tmp)?;
        Ok(tmp[..n].to_vec())
    }

    /// The next newline-terminated line (a watch event); `Ok(None)` at a
    /// clean end.
    pub fn next_line(&mut self, timeout: Duration) -> io::Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(nl) = self.lines.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.lines.drain(..=nl).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_data(left)? {
                Some(piece) => self.lines.extend_from_slice(&piece),
                None => return Ok(None),
            }
        }
    }
}
