//! The bench's load generator: keep-alive HTTP/1.1 over TLS, blocking, one
//! connection per thread, with the crate's own body decoder.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lite_apiserver::http::{BodyDecoder, Decoded, Parsed, ResponseHead};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// TLS client settings (trust the test CA, present the node's cert).
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One keep-alive connection.
pub struct Conn {
    tls: Tls,
    buf: Vec<u8>,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl Conn {
    pub fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        let conn = rustls::ClientConnection::new(
            config.clone(),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .map_err(io::Error::other)?;
        Ok(Conn {
            tls: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::with_capacity(64 * 1024),
            addr,
            config: config.clone(),
        })
    }

    /// GET `path` as `agent`; returns (status, body length). Reconnects once
    /// if the kept-alive connection was closed.
    pub fn get(&mut self, path: &str, agent: &str) -> io::Result<(u16, usize)> {
        match self.try_get(path, agent) {
            Ok(r) => Ok(r),
            Err(_) => {
                *self = Conn::connect(self.addr, &self.config)?;
                self.try_get(path, agent)
            }
        }
    }

    fn try_get(&mut self, path: &str, agent: &str) -> io::Result<(u16, usize)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {agent}\r\nAccept: application/json\r\n\r\n");
        self.tls.write_all(req.as_bytes())?;
        self.tls.flush()?;
        let head = self.read_head()?;
        let mut dec = BodyDecoder::new(head.framing("GET").map_err(io::Error::other)?);
        let mut len = 0;
        loop {
            match dec.decode(&self.buf).map_err(io::Error::other)? {
                Decoded::Data { start, end } => {
                    len += end - start;
                    self.buf.drain(..end);
                }
                Decoded::Skip(n) => {
                    self.buf.drain(..n);
                }
                Decoded::Done(n) => {
                    self.buf.drain(..n);
                    return Ok((head.status, len));
                }
                Decoded::NeedMore => {
                    if self.fill()? == 0 {
                        dec.finish_at_eof().map_err(io::Error::other)?;
                        return Ok((head.status, len));
                    }
                }
            }
        }
    }

    /// Opens a watch; `next_event` then yields its lines.
    pub fn watch(mut self, path: &str, agent: &str) -> io::Result<Watch> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {agent}\r\nAccept: application/json\r\n\r\n");
        self.tls.write_all(req.as_bytes())?;
        self.tls.flush()?;
        let head = self.read_head()?;
        let dec = BodyDecoder::new(head.framing("GET").map_err(io::Error::other)?);
        Ok(Watch {
            conn: self,
            dec,
            lines: Vec::new(),
            clean_end: false,
        })
    }

    /// GETs `path` and reads the body like a slow client: after each
    /// `chunk` bytes it pauses `pause`. Reports the status and the body
    /// bytes into `progress` as it goes; returns at the end of the body, at
    /// EOF, or once `progress.stop` is set.
    pub fn slow_get(
        &mut self,
        path: &str,
        agent: &str,
        chunk: usize,
        pause: Duration,
        progress: &Progress,
    ) -> io::Result<()> {
        self.tls
            .sock
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {agent}\r\nAccept: application/json\r\n\r\n");
        self.tls.write_all(req.as_bytes())?;
        self.tls.flush()?;
        let head = self.read_head()?;
        progress.status.store(head.status.into(), Ordering::SeqCst);
        let mut dec = BodyDecoder::new(head.framing("GET").map_err(io::Error::other)?);
        let mut since_pause = 0;
        loop {
            match dec.decode(&self.buf).map_err(io::Error::other)? {
                Decoded::Data { start, end } => {
                    progress
                        .bytes
                        .fetch_add((end - start) as u64, Ordering::SeqCst);
                    self.buf.drain(..end);
                }
                Decoded::Skip(n) => {
                    self.buf.drain(..n);
                }
                Decoded::Done(_) => return Ok(()),
                Decoded::NeedMore => {
                    if progress.stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    if since_pause >= chunk {
                        std::thread::sleep(pause);
                        since_pause = 0;
                    }
                    let n = self.fill()?;
                    if n == 0 {
                        return Ok(());
                    }
                    since_pause += n;
                }
            }
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 32 * 1024];
        let n = match self.tls.read(&mut tmp) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn read_head(&mut self) -> io::Result<ResponseHead> {
        loop {
            if let Ok(Parsed::Complete(head, used)) = ResponseHead::parse(&self.buf) {
                self.buf.drain(..used);
                return Ok(head);
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// What a [`Conn::slow_get`] has read so far; `stop` ends it.
#[derive(Default)]
pub struct Progress {
    pub status: AtomicU64,
    pub bytes: AtomicU64,
    pub stop: AtomicBool,
    pub done: AtomicBool,
}

/// An open watch.
pub struct Watch {
    conn: Conn,
    dec: BodyDecoder,
    lines: Vec<u8>,
    /// Set when the stream ended with its terminator (the zero-size chunk),
    /// not by EOF.
    pub clean_end: bool,
}

impl Watch {
    /// The next event line, or None when the stream ends.
    pub fn next_event(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(nl) = self.lines.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.lines.drain(..=nl).collect();
                return Ok(Some(line));
            }
            match self.dec.decode(&self.conn.buf).map_err(io::Error::other)? {
                Decoded::Data { start, end } => {
                    self.lines.extend_from_slice(&self.conn.buf[start..end]);
                    self.conn.buf.drain(..end);
                }
                Decoded::Skip(n) => {
                    self.conn.buf.drain(..n);
                }
                Decoded::Done(_) => {
                    self.clean_end = true;
                    return Ok(None);
                }
                Decoded::NeedMore => {
                    if self.conn.fill()? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// Per-request latencies of `n` sequential GETs on one connection.
pub fn latencies(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    n: usize,
) -> Vec<Duration> {
    let mut conn = Conn::connect(addr, config).unwrap();
    conn.get(path, "kubelet/bench").unwrap();
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let (status, _) = conn.get(path, "kubelet/bench").unwrap();
            assert_eq!(status, 200);
            t.elapsed()
        })
        .collect()
}

/// Requests per second with `concurrency` connections for `dur`, and the
/// CPU microseconds per request that `cpu_secs` (the server's user +
/// system time so far) saw over the same window.
pub fn throughput(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    concurrency: usize,
    dur: Duration,
    cpu_secs: &dyn Fn() -> f64,
) -> (f64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (done, stop, config, path) =
                (done.clone(), stop.clone(), config.clone(), path.to_owned());
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr, &config).unwrap();
                conn.get(&path, "kubelet/bench").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if conn.get(&path, "kubelet/bench").is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200)); // warm-up: connections up
    let start_count = done.load(Ordering::Relaxed);
    let start = Instant::now();
    let cpu_start = cpu_secs();
    std::thread::sleep(dur);
    let count = done.load(Ordering::Relaxed) - start_count;
    let cpu = cpu_secs() - cpu_start;
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    (count as f64 / secs, cpu * 1e6 / count.max(1) as f64)
}

/// The p-th percentile (0..=100) of durations, in microseconds.
pub fn percentile_us(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p / 100.0).round() as usize;
    samples[idx].as_secs_f64() * 1e6
}

/// Median of floats.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}
