//! One upstream double plus one lite-apiserver in front of it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::client::Client;
use super::daemon::Daemon;
use super::double::{Double, Opts};
use super::kubectl::{Auth, Kubectl};
use super::pki::{Pair, Pki};

pub struct Setup {
    pub dir: PathBuf,
    pub pki: Pki,
    pub double: Double,
    pub proxy: Daemon,
}

impl Setup {
    /// Default flags: the node identity, every agent cached, 1 s probes.
    pub fn new(name: &str) -> Setup {
        Setup::with(name, Opts::default(), &[])
    }

    pub fn with(name: &str, opts: Opts, extra: &[&str]) -> Setup {
        let dir = super::temp_dir(name);
        let pki = Pki::generate(&dir.join("pki"));
        let double = Double::start(&pki, opts);
        let mut args: Vec<String> = vec!["--server".into(), double.url()];
        args.extend(pki.proxy_flags());
        if !extra.contains(&"--cache-agents") {
            args.extend(["--cache-agents", "*"].map(String::from));
        }
        args.extend(["--health-interval", "1"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        let proxy = Daemon::start(&dir.join("cache"), &args);
        Setup {
            dir,
            pki,
            double,
            proxy,
        }
    }

    /// A raw client of lite-apiserver with `cert`.
    pub fn client(&self, cert: Option<&Pair>) -> Client {
        Client::new(self.proxy.addr, &self.pki.ca.pem, cert)
    }

    /// kubectl through lite-apiserver with the node's cert.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(
            &self.proxy.url(),
            &self.pki.ca.pem,
            Auth::Cert(self.pki.node.clone()),
            &self.dir,
        )
    }

    /// kubectl straight to the double.
    pub fn kubectl_direct(&self) -> Kubectl {
        Kubectl::new(
            &self.double.url(),
            &self.pki.ca.pem,
            Auth::Cert(self.pki.node.clone()),
            &self.dir,
        )
    }

    /// Waits until the proxy's metrics say online (or offline).
    pub fn wait_online(&self, online: bool) {
        let want = if online { 1.0 } else { 0.0 };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.proxy.metric("lite_apiserver_upstream_online") != want {
            assert!(
                Instant::now() < deadline,
                "proxy never went online={online}\n{}",
                self.proxy.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
