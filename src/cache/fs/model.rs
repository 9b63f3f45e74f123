//! The crash model (tests): replays a prefix of a [`Log`] on a snapshot of
//! the directory and says what a power cut at that point could leave (see
//! the recorder in `record.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use super::record::Op;

/// Which unsynced directory changes a crash kept (each directory alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirCut {
    /// None of them.
    None,
    /// The first half, in order.
    Half,
    /// All of them, in order.
    All,
}

/// What a crash kept of a file's unsynced writes (each file alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCut {
    /// None: the last synced bytes (empty if never synced).
    Lost,
    /// The first half of the writes, in order.
    HalfWrites,
    /// Every write, but the file cut at half its length.
    Truncated,
    /// Every write but the middle one (its range reads as zeros or as the
    /// bytes before): writes reach the disk in any order.
    Hole,
    /// Every write.
    Full,
}

impl DirCut {
    /// Every kind.
    pub const ALL: [DirCut; 3] = [DirCut::None, DirCut::Half, DirCut::All];
}

impl DataCut {
    /// Every kind.
    pub const ALL: [DataCut; 5] = [
        DataCut::Lost,
        DataCut::HalfWrites,
        DataCut::Truncated,
        DataCut::Hole,
        DataCut::Full,
    ];
}

/// One change to a directory not yet synced.
#[derive(Debug, Clone)]
enum Change {
    Link(String, usize),
    Unlink(String),
    Rename(String, String),
}

#[derive(Debug, Clone, Default)]
struct Dir {
    /// What the running process sees.
    live: BTreeMap<String, usize>,
    /// What its last sync made durable.
    durable: BTreeMap<String, usize>,
    /// Changes since, in order.
    pending: Vec<Change>,
}

#[derive(Debug, Clone, Default)]
struct FileData {
    /// Bytes made durable by the last sync.
    synced: Vec<u8>,
    /// Writes since, in order.
    pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Clone)]
enum Node {
    Dir(Dir),
    File(FileData),
}

/// A directory tree as a crash could leave it: relative path -> file bytes
/// (None: a directory).
pub type Image = BTreeMap<PathBuf, Option<Vec<u8>>>;

/// The file system state after a prefix of the log.
#[derive(Debug, Clone)]
pub struct Model {
    root: PathBuf,
    nodes: Vec<Node>,
    handles: HashMap<u64, usize>,
}

impl Model {
    /// The tree under `root` as it is now, all of it taken as durable.
    pub fn snapshot(root: &Path) -> Model {
        let mut model = Model {
            root: root.to_owned(),
            nodes: vec![Node::Dir(Dir::default())],
            handles: HashMap::new(),
        };
        model.load(root, 0);
        model
    }

    fn load(&mut self, dir: &Path, node: usize) {
        let mut read: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        read.sort_by_key(|e| e.file_name());
        for entry in read {
            let name = entry.file_name().into_string().unwrap();
            let kind = entry.file_type().unwrap();
            let child = if kind.is_dir() {
                self.nodes.push(Node::Dir(Dir::default()));
                let child = self.nodes.len() - 1;
                self.load(&entry.path(), child);
                child
            } else {
                let bytes = std::fs::read(entry.path()).unwrap();
                self.nodes.push(Node::File(FileData {
                    synced: bytes,
                    pending: Vec::new(),
                }));
                self.nodes.len() - 1
            };
            let Node::Dir(d) = &mut self.nodes[node] else {
                unreachable!()
            };
            d.live.insert(name.clone(), child);
            d.durable.insert(name, child);
        }
    }

    /// Applies one logged operation.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Mkdir(p) => {
                self.nodes.push(Node::Dir(Dir::default()));
                let node = self.nodes.len() - 1;
                self.link(p, node);
            }
            Op::Create { path, file } => {
                self.nodes.push(Node::File(FileData::default()));
                let node = self.nodes.len() - 1;
                self.handles.insert(*file, node);
                self.link(path, node);
            }
            Op::Write { file, at, bytes } => {
                let node = self.handles[file];
                self.file(node).pending.push((*at, bytes.clone()));
            }
            Op::Sync { file } => {
                let node = self.handles[file];
                let data = self.file(node);
                data.synced = apply_writes(&data.synced, &data.pending);
                data.pending.clear();
            }
            Op::Rename { from, to } => {
                let (from_dir, from_name) = self.split(from);
                let (to_dir, to_name) = self.split(to);
                let node = self
                    .dir(from_dir)
                    .live
                    .remove(&from_name)
                    .unwrap_or_else(|| panic!("rename of a missing {}", from.display()));
                if from_dir == to_dir {
                    let d = self.dir(to_dir);
                    d.live.insert(to_name.clone(), node);
                    d.pending.push(Change::Rename(from_name, to_name));
                } else {
                    self.dir(from_dir).pending.push(Change::Unlink(from_name));
                    let d = self.dir(to_dir);
                    d.live.insert(to_name.clone(), node);
                    d.pending.push(Change::Link(to_name, node));
                }
            }
            Op::Remove(p) => {
                let (dir, name) = self.split(p);
                let d = self.dir(dir);
                d.live
                    .remove(&name)
                    .unwrap_or_else(|| panic!("unlink of a missing {}", p.display()));
                d.pending.push(Change::Unlink(name));
            }
            Op::SyncDir(p) => {
                let node = self.resolve(p);
                let d = self.dir(node);
                d.durable = d.live.clone();
                d.pending.clear();
            }
            Op::Mark(_) => {}
        }
    }

    /// What a crash now could leave, under `dirs` and `data`.
    pub fn image(&self, dirs: DirCut, data: DataCut) -> Image {
        let mut out = Image::new();
        self.collect(0, PathBuf::new(), dirs, data, &mut out, 0);
        out
    }

    fn collect(
        &self,
        node: usize,
        at: PathBuf,
        dirs: DirCut,
        data: DataCut,
        out: &mut Image,
        depth: usize,
    ) {
        assert!(depth < 64, "directory cycle in the model");
        let Node::Dir(d) = &self.nodes[node] else {
            unreachable!()
        };
        let mut entries = d.durable.clone();
        let keep = match dirs {
            DirCut::None => 0,
            DirCut::Half => d.pending.len() / 2,
            DirCut::All => d.pending.len(),
        };
        for change in &d.pending[..keep] {
            match change {
                Change::Link(name, n) => {
                    entries.insert(name.clone(), *n);
                }
                Change::Unlink(name) => {
                    entries.remove(name);
                }
                Change::Rename(from, to) => {
                    // Replays the rename on the durable entries: the node
                    // it moved is the one the live rename moved.
                    if let Some(n) = entries.remove(from) {
                        entries.insert(to.clone(), n);
                    }
                }
            }
        }
        for (name, child) in entries {
            let path = at.join(&name);
            match &self.nodes[child] {
                Node::Dir(_) => {
                    out.insert(path.clone(), None);
                    self.collect(child, path, dirs, data, out, depth + 1);
                }
                Node::File(f) => {
                    out.insert(path, Some(crash_bytes(f, data)));
                }
            }
        }
    }

    fn link(&mut self, path: &Path, node: usize) {
        let (dir, name) = self.split(path);
        let d = self.dir(dir);
        d.live.insert(name.clone(), node);
        d.pending.push(Change::Link(name, node));
    }

    /// The live directory node holding `path`, and its last component.
    fn split(&self, path: &Path) -> (usize, String) {
        let parent = path.parent().expect("a path with a parent");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 name")
            .to_owned();
        (self.resolve(parent), name)
    }

    /// The live node at `path` (absolute, under the root).
    fn resolve(&self, path: &Path) -> usize {
        let rel = path
            .strip_prefix(&self.root)
            .unwrap_or_else(|_| panic!("{} is outside the cache dir", path.display()));
        let mut node = 0;
        for part in rel.components() {
            let Component::Normal(name) = part else {
                panic!("odd path {}", path.display())
            };
            let Node::Dir(d) = &self.nodes[node] else {
                panic!("{} goes through a file", path.display())
            };
            node = *d
                .live
                .get(name.to_str().unwrap())
                .unwrap_or_else(|| panic!("{} is not in the model", path.display()));
        }
        node
    }

    fn dir(&mut self, node: usize) -> &mut Dir {
        match &mut self.nodes[node] {
            Node::Dir(d) => d,
            Node::File(_) => panic!("not a directory"),
        }
    }

    fn file(&mut self, node: usize) -> &mut FileData {
        match &mut self.nodes[node] {
            Node::File(f) => f,
            Node::Dir(_) => panic!("not a file"),
        }
    }
}

/// `base` with `writes` applied in order (a write past the end extends
/// the file; a gap reads as zeros).
fn apply_writes(base: &[u8], writes: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = base.to_vec();
    for (at, bytes) in writes {
        let at = *at as usize;
        if out.len() < at + bytes.len() {
            out.resize(at + bytes.len(), 0);
        }
        out[at..at + bytes.len()].copy_from_slice(bytes);
    }
    out
}

/// A file's bytes after a crash that kept `data` of its unsynced writes.
fn crash_bytes(f: &FileData, data: DataCut) -> Vec<u8> {
    let n = f.pending.len();
    match data {
        DataCut::Lost => f.synced.clone(),
        DataCut::HalfWrites => apply_writes(&f.synced, &f.pending[..n / 2]),
        DataCut::Full => apply_writes(&f.synced, &f.pending),
        DataCut::Truncated => {
            let mut full = apply_writes(&f.synced, &f.pending);
            if n > 0 {
                let keep = f.synced.len().max(full.len() / 2);
                full.truncate(keep);
            }
            full
        }
        DataCut::Hole => {
            if n == 0 {
                return f.synced.clone();
            }
            let mut full = apply_writes(&f.synced, &f.pending);
            let (at, bytes) = &f.pending[n / 2];
            let old = apply_writes(&f.synced, &f.pending[..n / 2]);
            for i in 0..bytes.len() {
                let pos = *at as usize + i;
                full[pos] = old.get(pos).copied().unwrap_or(0);
            }
            full
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lite-record-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The model itself: a publish without its directory sync is lost in
    /// the `None` image and present in the `All` one; data not synced is
    /// empty when lost.
    #[test]
    fn model_follows_the_durability_rules() {
        let root = temp("model");
        std::fs::write(root.join("old"), b"old").unwrap();
        let mut m = Model::snapshot(&root);
        let j = |n: &str| root.join(n);
        m.apply(&Op::Mkdir(j("d")));
        m.apply(&Op::Create {
            path: j("d/t"),
            file: 1,
        });
        m.apply(&Op::Write {
            file: 1,
            at: 0,
            bytes: b"hello".to_vec(),
        });
        let none = m.image(DirCut::None, DataCut::Full);
        assert_eq!(none.len(), 1, "{none:?}");
        let all = m.image(DirCut::All, DataCut::Lost);
        assert_eq!(all[&PathBuf::from("d/t")], Some(Vec::new()));
        let all = m.image(DirCut::All, DataCut::Truncated);
        assert_eq!(all[&PathBuf::from("d/t")], Some(b"he".to_vec()));
        m.apply(&Op::Sync { file: 1 });
        m.apply(&Op::SyncDir(root.clone()));
        m.apply(&Op::Rename {
            from: j("d/t"),
            to: j("old"),
        });
        m.apply(&Op::Remove(j("old")));
        let none = m.image(DirCut::None, DataCut::Lost);
        assert_eq!(none[&PathBuf::from("old")], Some(b"old".to_vec()));
        assert!(!none.contains_key(&PathBuf::from("d/t")), "d not synced");
        let half = m.image(DirCut::Half, DataCut::Lost);
        assert_eq!(half[&PathBuf::from("old")], Some(b"hello".to_vec()));
        m.apply(&Op::SyncDir(root.clone()));
        let none = m.image(DirCut::None, DataCut::Lost);
        assert!(!none.contains_key(&PathBuf::from("old")));
        assert_eq!(none[&PathBuf::from("d")], None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
