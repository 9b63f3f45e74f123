//! The last good `cache_agents` value, kept in the cache directory so a
//! node that reboots while offline caches the same agents before the cloud
//! is reachable.
//!
//! One small text file, `DIR/.cache-agents` (a name no agent directory and
//! no entry can have, so GC and the store never touch it), written
//! crash-safely ([`crate::durable::replace`]: temp file, fsync, rename,
//! fsync of the directory). It names the
//! ConfigMap it came from, so a changed `--cache-agents-configmap` does not
//! inherit another ConfigMap's agents. A failed write is logged by the
//! caller and changes nothing else: the live set is already in memory.
//!
//! ```text
//! # lite-apiserver: the last good cache_agents value read from the cluster
//! configmap kube-system/lite-apiserver
//! cache_agents my-operator,openapi-generator
//! ```

use std::io;
use std::path::Path;

use crate::cache::names::TMP_PREFIX;

/// The file's name in the cache directory.
pub const FILE: &str = ".cache-agents";
/// Largest file read back (a value of [`super::MAX_AGENTS`] long names is
/// far smaller).
const MAX_FILE: u64 = 64 * 1024;

/// The file's text for `agents` of ConfigMap `configmap` (`NS/NAME`).
pub fn encode(configmap: &str, agents: &[String]) -> String {
    format!(
        "# lite-apiserver: the last good {} value read from the cluster\nconfigmap {configmap}\n{} {}\n",
        super::KEY,
        super::KEY,
        agents.join(",")
    )
}

/// The agents in a file's text, if it is for `configmap` and well formed.
pub fn decode(text: &str, configmap: &str) -> Result<Vec<String>, String> {
    let mut from = None;
    let mut value = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        match line.split_once(' ').unwrap_or((line, "")) {
            ("configmap", v) => from = Some(v),
            (super::KEY, v) => value = Some(v),
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    match (from, value) {
        (Some(from), Some(value)) if from == configmap => {
            super::parse_value(value).map_err(|e| e.to_string())
        }
        (Some(from), Some(_)) => Err(format!("it is for ConfigMap {from}")),
        _ => Err("it is incomplete".to_owned()),
    }
}

/// The agents saved in `dir` for `configmap`, if any (a missing file is
/// no value; an unusable one is logged and ignored).
pub fn read(dir: &Path, configmap: &str) -> Option<Vec<String>> {
    let path = dir.join(FILE);
    let text = match std::fs::metadata(&path) {
        Ok(meta) if meta.len() > MAX_FILE => Err(format!("{} bytes", meta.len())),
        Ok(_) => std::fs::read_to_string(&path).map_err(|e| e.to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => Err(e.to_string()),
    };
    match text.and_then(|text| decode(&text, configmap)) {
        Ok(agents) => Some(agents),
        Err(why) => {
            log::warn!("ignoring the saved cache agents {}: {why}", path.display());
            None
        }
    }
}

/// Writes the file crash-safely: after a power cut it holds the old value
/// or the new one, never a mix. Blocking: run it on the I/O pool.
pub fn write(dir: &Path, configmap: &str, agents: &[String]) -> io::Result<()> {
    // The store's temp prefix: a temp file a crash left is swept at start.
    let tmp = dir.join(format!("{TMP_PREFIX}cache-agents"));
    let text = encode(configmap, agents);
    crate::durable::replace(&dir.join(FILE), &tmp, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CM: &str = "kube-system/lite-apiserver";

    #[test]
    fn round_trip_and_refusals() {
        let agents = vec!["foo".to_owned(), "*".to_owned()];
        assert_eq!(decode(&encode(CM, &agents), CM), Ok(agents));
        assert_eq!(decode(&encode(CM, &[]), CM), Ok(Vec::new()));
        let trimmed = "configmap kube-system/lite-apiserver\ncache_agents\n";
        assert_eq!(decode(trimmed, CM), Ok(Vec::new()));
        assert!(decode(&encode(CM, &["a".into()]), "edge/other").is_err());
        assert!(decode("configmap kube-system/lite-apiserver\n", CM).is_err());
        assert!(decode("garbage\n", CM).is_err());
        let bad = "configmap kube-system/lite-apiserver\ncache_agents a b\n";
        assert!(decode(bad, CM).is_err());
    }

    #[test]
    fn written_and_read_back() {
        let dir = std::env::temp_dir().join(format!("lite-agents-saved-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read(&dir, CM), None);
        write(&dir, CM, &["foo".to_owned()]).unwrap();
        write(&dir, CM, &["foo".to_owned(), "bar".to_owned()]).unwrap();
        assert_eq!(
            read(&dir, CM),
            Some(vec!["foo".to_owned(), "bar".to_owned()])
        );
        assert_eq!(read(&dir, "edge/other"), None);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [FILE], "no temp file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
