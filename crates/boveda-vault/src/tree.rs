//! Tree objects: one directory's listing, stored as a blob in a tree pack.
//! A tree's id is the keyed hash of its encoding, so an unchanged directory
//! yields the same id and costs nothing to store again.

use serde::{Deserialize, Serialize};

use crate::ChunkId;
use crate::error::{Result, VaultError};

/// The tree encoding's own version, inside the format version.
pub const TREE_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// One run of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Piece {
    /// A stored chunk of `len` bytes.
    Data { id: ChunkId, len: u32 },
    /// A hole of `len` bytes: nothing stored, restored as a hole.
    Hole { len: u64 },
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Data { len, .. } => u64::from(*len),
            Piece::Hole { len } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One directory entry with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The entry's name as raw bytes (names need not be UTF-8).
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits and file type, as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    /// Change time and inode identity: used only to detect unchanged files.
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
    pub nlink: u64,
    /// Device number of a character or block device node.
    pub rdev: u64,
    pub content: Vec<Piece>,
    pub subtree: Option<ChunkId>,
    pub link_target: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Node {
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Self {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device: 0,
            nlink: 1,
            rdev: 0,
            content: Vec::new(),
            subtree: None,
            link_target: Vec::new(),
            xattrs: Vec::new(),
        }
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A directory listing, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Tree {
    pub version: u8,
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn new(mut nodes: Vec<Node>) -> Self {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Self { version: TREE_VERSION, nodes }
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(self).map_err(|e| VaultError::Invalid(e.to_string()))
    }

    /// Decodes and validates a tree: names must be safe to create below a
    /// restore target (no `/`, NUL, `.`, `..` or empty name) and unique.
    ///
    /// # Errors
    /// `Damaged` naming the tree.
    pub fn decode(id: &ChunkId, bytes: &[u8]) -> Result<Self> {
        let what = || format!("tree {id}");
        let tree: Tree = postcard::from_bytes(bytes).map_err(|e| VaultError::damaged(what(), e))?;
        if tree.version > TREE_VERSION {
            return Err(VaultError::damaged(what(), format!("tree version {} is newer than supported", tree.version)));
        }
        for (i, n) in tree.nodes.iter().enumerate() {
            if !is_safe_name(&n.name) {
                return Err(VaultError::damaged(what(), format!("unsafe entry name {:?}", n.name_lossy())));
            }
            if i > 0 && tree.nodes[i - 1].name >= n.name {
                return Err(VaultError::damaged(what(), "entries are not sorted and unique"));
            }
        }
        Ok(tree)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }
}

/// A name that can be created inside a directory without leaving it.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_node() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(1u8..=255, 1..20),
            any::<u32>(),
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_filter("safe", |(name, ..)| is_safe_name(name))
            .prop_map(|(name, mode, mtime, target)| {
                let mut n = Node::new(name, NodeKind::File);
                n.mode = mode;
                n.mtime_ns = mtime;
                n.link_target = target;
                n.content = vec![Piece::Data { id: ChunkId([3; 32]), len: 7 }, Piece::Hole { len: 4096 }];
                n.xattrs = vec![(b"user.a".to_vec(), vec![1, 2])];
                n
            })
    }

    proptest! {
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(arb_node(), 0..20)) {
            let mut nodes = nodes;
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let t = Tree::new(nodes);
            let bytes = t.encode().expect("encode");
            prop_assert_eq!(Tree::decode(&ChunkId([0; 32]), &bytes).expect("decode"), t);
        }
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [&b".."[..], b".", b"", b"a/b", b"a\0"] {
            let t = Tree { version: TREE_VERSION, nodes: vec![Node::new(bad.to_vec(), NodeKind::File)] };
            let bytes = t.encode().expect("encode");
            assert!(Tree::decode(&ChunkId([0; 32]), &bytes).is_err(), "{bad:?}");
        }
        let dup = Tree { version: TREE_VERSION, nodes: vec![Node::new(b"a".to_vec(), NodeKind::File); 2] };
        assert!(Tree::decode(&ChunkId([0; 32]), &dup.encode().expect("encode")).is_err());
    }
}
