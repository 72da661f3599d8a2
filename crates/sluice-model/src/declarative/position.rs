//! Where each node of a YAML document starts, so an error found long after parsing (a schema
//! violation, a dangling reference) can still name its line and column.
//!
//! serde_yaml gives values without positions, so the same text is read a second time with
//! yaml-rust2's event parser, whose events carry markers. The two parsers agree on structure
//! for anything serde_yaml accepted; if yaml-rust2 ever refuses a file, errors simply lose
//! their line numbers instead of failing the load.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path into a document: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// The shape of a document with the position of every node (and of every mapping key).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PosNode {
    Leaf(Pos),
    Seq(Pos, Vec<PosNode>),
    Map(Pos, Vec<MapEntry>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct MapEntry {
    key: String,
    key_pos: Pos,
    value: PosNode,
}

/// Collects events into a [`PosNode`] tree. Only the first document is kept: serde_yaml
/// refuses streams with several.
#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Frame>,
    root: Option<PosNode>,
}

enum Frame {
    Seq(Pos, Vec<PosNode>),
    /// A mapping being filled, with the key waiting for its value.
    Map(Pos, Vec<MapEntry>, Option<(String, Pos)>),
}

/// Reads the positions of `text`, or `None` if yaml-rust2 cannot parse it.
pub(super) fn positions(text: &str) -> Option<PosNode> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).ok()?;
    builder.root
}

/// Renders a path the way decK users read it: `services[2].routes[0].paths[1]`.
pub(super) fn render_path(base: &str, segments: &[Seg]) -> String {
    let mut path = base.to_owned();
    for segment in segments {
        match segment {
            Seg::Key(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Seg::Index(index) => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    path
}

// === impl PosNode ===

impl PosNode {
    pub(super) fn pos(&self) -> Pos {
        match self {
            PosNode::Leaf(pos) | PosNode::Seq(pos, _) | PosNode::Map(pos, _) => *pos,
        }
    }

    /// The position that best names `path`: the key when the path ends at a mapping key
    /// (that is where a user looks for `host:`), the element when it ends at an index. A path
    /// that leaves the document (a missing field, a value the loader filled in) gets the
    /// position of its deepest existing ancestor, usually the entity itself.
    pub(super) fn locate(&self, path: &[Seg]) -> Pos {
        let mut node = self;
        let mut best = self.pos();
        for segment in path {
            let next = match (node, segment) {
                (PosNode::Map(_, entries), Seg::Key(key)) => entries
                    .iter()
                    .rev()
                    .find(|entry| entry.key == *key)
                    .map(|entry| (entry.key_pos, &entry.value)),
                (PosNode::Seq(_, items), Seg::Index(index)) => {
                    items.get(*index).map(|item| (item.pos(), item))
                }
                _ => None,
            };
            match next {
                Some((pos, child)) => {
                    best = pos;
                    node = child;
                }
                None => return best,
            }
        }
        best
    }
}

// === impl TreeBuilder ===

impl TreeBuilder {
    /// Attaches a finished node to its parent. In a mapping, nodes alternate between key and
    /// value; a key's text is kept to find it again (complex keys are never looked up).
    fn push(&mut self, node: PosNode, text: String) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => *pending = Some((text, node.pos())),
                Some((key, key_pos)) => entries.push(MapEntry {
                    key,
                    key_pos,
                    value: node,
                }),
            },
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        // yaml-rust2 counts lines from 1 and columns from 0.
        let pos = Pos {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match event {
            Event::Scalar(text, ..) => self.push(PosNode::Leaf(pos), text),
            Event::Alias(..) => self.push(PosNode::Leaf(pos), String::new()),
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(pos, Vec::new())),
            Event::MappingStart(..) => self.stack.push(Frame::Map(pos, Vec::new(), None)),
            Event::SequenceEnd => {
                if let Some(Frame::Seq(start, items)) = self.stack.pop() {
                    self.push(PosNode::Seq(start, items), String::new());
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(start, entries, _)) = self.stack.pop() {
                    // yaml-rust2 marks a block mapping at its first `:`; people read an
                    // entity as starting at its first key.
                    let pos = entries.first().map_or(start, |entry| entry.key_pos);
                    self.push(PosNode::Map(pos, entries), String::new());
                }
            }
            _ => {}
        }
    }
}
