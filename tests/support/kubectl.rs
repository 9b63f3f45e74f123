//! Runs the real `kubectl` against a server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::pki::Pair;

/// How kubectl authenticates.
#[derive(Clone)]
pub enum Auth {
    Cert(Pair),
    Token(String),
}

/// kubectl pointed at one server.
#[derive(Clone)]
pub struct Kubectl {
    pub server: String,
    pub ca: PathBuf,
    pub auth: Auth,
    pub cache: PathBuf,
}

impl Kubectl {
    pub fn new(server: &str, ca: &Path, auth: Auth, scratch: &Path) -> Kubectl {
        Kubectl {
            server: server.to_owned(),
            ca: ca.to_owned(),
            auth,
            cache: scratch.join(format!("kubectl-cache-{}", rand_suffix())),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig=/dev/null")
            .arg(format!("--server={}", self.server))
            .arg(format!("--certificate-authority={}", self.ca.display()))
            .arg(format!("--cache-dir={}", self.cache.display()))
            .arg("--request-timeout=20s");
        match &self.auth {
            Auth::Cert(p) => {
                cmd.arg(format!("--client-certificate={}", p.cert.display()));
                cmd.arg(format!("--client-key={}", p.key.display()));
            }
            Auth::Token(t) => {
                cmd.arg(format!("--token={t}"));
            }
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    /// Writes a kubeconfig file for the same server, CA and credentials,
    /// for tools that take `--kubeconfig FILE` rather than flags.
    pub fn write_kubeconfig(&self, path: &Path) {
        let user = match &self.auth {
            Auth::Cert(p) => format!(
                "client-certificate: {}\n      client-key: {}",
                p.cert.display(),
                p.key.display()
            ),
            Auth::Token(t) => format!("token: {t}"),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: test\n    cluster:\n      server: {}\n      certificate-authority: {}\nusers:\n  - name: test\n    user:\n      {user}\ncontexts:\n  - name: test\n    context: {{cluster: test, user: test}}\ncurrent-context: test\n",
            self.server,
            self.ca.display()
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// Runs to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("kubectl runs")
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and returns parsed JSON output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl JSON")
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
