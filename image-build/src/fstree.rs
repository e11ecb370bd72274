//! An in-memory file tree: what goes into an initramfs or a root filesystem,
//! kept sorted so every writer emits entries in the same order every build.

use std::collections::BTreeMap;

/// What a path in the tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// One entry: its kind and permission bits (e.g. 0o755); owner is always root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub mode: u32,
    pub kind: NodeKind,
}

/// Paths are relative, '/'-separated, without a leading slash ("sbin/init").
/// Parent directories are created by `insert`, so writers can rely on every
/// parent being present and sorting before its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsTree {
    entries: BTreeMap<String, Node>,
}

impl FsTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `path`, creating missing parents as 0o755 directories.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_matches('/');
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p)
            .unwrap_or(&[])
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Node {
                mode: 0o755,
                kind: NodeKind::Dir,
            });
        }
        self.entries.insert(path.to_string(), node);
    }

    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        self.insert(
            path,
            Node {
                mode,
                kind: NodeKind::File(data.into()),
            },
        );
    }

    pub fn dir(&mut self, path: &str) {
        self.insert(
            path,
            Node {
                mode: 0o755,
                kind: NodeKind::Dir,
            },
        );
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(
            path,
            Node {
                mode: 0o777,
                kind: NodeKind::Symlink(target.to_string()),
            },
        );
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path.trim_matches('/'))
    }

    /// Entries in sorted path order; every parent precedes its children.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of file sizes, for reporting.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|n| match &n.kind {
                NodeKind::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_creates_parents_in_order() {
        let mut t = FsTree::new();
        t.file("usr/bin/agent", 0o755, b"x".to_vec());
        t.dir("data");
        let paths: Vec<_> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["data", "usr", "usr/bin", "usr/bin/agent"]);
        assert_eq!(t.get("/usr/bin").unwrap().kind, NodeKind::Dir);
    }
}
