//! A radix tree (compressed prefix trie) over token sequences: the shape of the work an
//! evaluation repeats. Every node is a point where sequences diverge or end; its edge from the
//! parent is a run of tokens that all sequences below it share, so a prefix shared by several
//! requests (a few-shot preamble, a multiple-choice context) is one node however many requests
//! continue it. Pure bookkeeping, no tensors: [`crate::plan`] decides which nodes to encode once.

/// One node. Its edge label is `seqs[seq][start..end]`: positions are absolute (`start` is the
/// parent's `end`), and `seq` is any sequence passing through the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrieNode {
    pub seq: usize,
    pub start: usize,
    pub end: usize,
    pub parent: Option<usize>,
    /// Children in ascending order of their first token (deterministic plans).
    pub children: Vec<usize>,
    /// Sequences that end exactly here.
    pub ends: Vec<usize>,
}

/// The tree; node 0 is the root (the empty prefix).
#[derive(Debug, Clone)]
pub struct PrefixTrie {
    nodes: Vec<TrieNode>,
}

impl PrefixTrie {
    /// The tree of `seqs`; sequence `i` ends at the node listing `i` in [`TrieNode::ends`]
    /// (identical sequences end at the same node). O(total tokens).
    pub fn build<S: AsRef<[i64]>>(seqs: &[S]) -> PrefixTrie {
        let mut trie = PrefixTrie {
            nodes: vec![TrieNode {
                seq: 0,
                start: 0,
                end: 0,
                parent: None,
                children: Vec::new(),
                ends: Vec::new(),
            }],
        };
        for s in 0..seqs.len() {
            trie.insert(seqs, s);
        }
        trie
    }

    pub fn nodes(&self) -> &[TrieNode] {
        &self.nodes
    }

    pub fn root(&self) -> &TrieNode {
        &self.nodes[0]
    }

    /// The child of `node` whose edge starts with `token`: `Ok(slot)` in its children, or
    /// `Err(slot)` where such a child would be inserted.
    fn child_slot<S: AsRef<[i64]>>(
        &self,
        seqs: &[S],
        node: usize,
        token: i64,
    ) -> Result<usize, usize> {
        self.nodes[node]
            .children
            .binary_search_by_key(&token, |&c| {
                let child = &self.nodes[c];
                seqs[child.seq].as_ref()[child.start]
            })
    }

    fn insert<S: AsRef<[i64]>>(&mut self, seqs: &[S], s: usize) {
        let tokens = seqs[s].as_ref();
        let (mut node, mut pos) = (0usize, 0usize);
        loop {
            if pos == tokens.len() {
                self.nodes[node].ends.push(s);
                return;
            }
            let child = match self.child_slot(seqs, node, tokens[pos]) {
                Err(slot) => {
                    let leaf = self.push(TrieNode {
                        seq: s,
                        start: pos,
                        end: tokens.len(),
                        parent: Some(node),
                        children: Vec::new(),
                        ends: vec![s],
                    });
                    self.nodes[node].children.insert(slot, leaf);
                    return;
                }
                Ok(slot) => (slot, self.nodes[node].children[slot]),
            };
            let (slot, c) = child;
            let label = {
                let n = &self.nodes[c];
                &seqs[n.seq].as_ref()[n.start..n.end]
            };
            let common = label
                .iter()
                .zip(&tokens[pos..])
                .take_while(|(a, b)| a == b)
                .count();
            if common < label.len() {
                // Split the edge: a new node for the shared part, the old child below it.
                let (seq, start) = (self.nodes[c].seq, self.nodes[c].start);
                let mid = self.push(TrieNode {
                    seq,
                    start,
                    end: start + common,
                    parent: Some(node),
                    children: vec![c],
                    ends: Vec::new(),
                });
                self.nodes[c].start = start + common;
                self.nodes[c].parent = Some(mid);
                self.nodes[node].children[slot] = mid;
                node = mid;
            } else {
                node = c;
            }
            pos += common;
        }
    }

    fn push(&mut self, node: TrieNode) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Node ids with every parent before its children (depth-first, children in token order).
    pub fn preorder(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![0usize];
        while let Some(n) = stack.pop() {
            out.push(n);
            stack.extend(self.nodes[n].children.iter().rev());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(t: &PrefixTrie, seqs: &[Vec<i64>], n: usize) -> Vec<i64> {
        let n = &t.nodes()[n];
        seqs[n.seq][n.start..n.end].to_vec()
    }

    /// The path of tokens from the root to each node, for every node.
    fn paths(t: &PrefixTrie, seqs: &[Vec<i64>]) -> Vec<Vec<i64>> {
        let mut out = vec![Vec::new(); t.nodes().len()];
        for n in t.preorder() {
            if let Some(p) = t.nodes()[n].parent {
                out[n] = [out[p].clone(), label(t, seqs, n)].concat();
            }
        }
        out
    }

    #[test]
    fn shared_prefixes_become_one_node_and_every_sequence_ends_on_its_path() {
        let seqs: Vec<Vec<i64>> = vec![
            vec![1, 2, 3, 4, 5],
            vec![1, 2, 3, 4, 6],
            vec![1, 2, 3, 7],
            vec![1, 2, 3], // a prefix of the others: ends at an internal node
            vec![9],
            vec![1, 2, 3, 4, 5], // a duplicate: same node as the first
        ];
        let t = PrefixTrie::build(&seqs);
        let paths = paths(&t, &seqs);
        for (s, seq) in seqs.iter().enumerate() {
            let ends: Vec<usize> = (0..t.nodes().len())
                .filter(|&n| t.nodes()[n].ends.contains(&s))
                .collect();
            assert_eq!(ends.len(), 1, "sequence {s} ends at exactly one node");
            assert_eq!(&paths[ends[0]], seq);
        }
        // Root → [9], [1 2 3] → ([4] → [5], [6]), [7].
        assert_eq!(t.root().children.len(), 2);
        let shared = t.root().children[0];
        assert_eq!(label(&t, &seqs, shared), vec![1, 2, 3]);
        assert_eq!(t.nodes()[shared].ends, vec![3]);
        let under: Vec<Vec<i64>> = t.nodes()[shared]
            .children
            .iter()
            .map(|&c| label(&t, &seqs, c))
            .collect();
        assert_eq!(under, vec![vec![4], vec![7]]);
        // Radix property: no node without an end has a single child.
        for n in &t.nodes()[1..] {
            assert!(n.children.len() != 1 || !n.ends.is_empty(), "{n:?}");
            assert!(n.start < n.end);
        }
        assert_eq!(t.nodes().len(), 7);
    }

    #[test]
    fn children_are_in_token_order_whatever_the_insertion_order() {
        let a = PrefixTrie::build(&[vec![5i64, 1], vec![3, 1], vec![4, 1]]);
        let b = PrefixTrie::build(&[vec![4i64, 1], vec![5, 1], vec![3, 1]]);
        let firsts = |t: &PrefixTrie, seqs: &[Vec<i64>]| -> Vec<i64> {
            t.root()
                .children
                .iter()
                .map(|&c| seqs[t.nodes()[c].seq][t.nodes()[c].start])
                .collect()
        };
        assert_eq!(
            firsts(&a, &[vec![5, 1], vec![3, 1], vec![4, 1]]),
            vec![3, 4, 5]
        );
        assert_eq!(
            firsts(&b, &[vec![4, 1], vec![5, 1], vec![3, 1]]),
            vec![3, 4, 5]
        );
    }

    #[test]
    fn empty_input_and_empty_sequences() {
        let t = PrefixTrie::build::<Vec<i64>>(&[]);
        assert_eq!(t.nodes().len(), 1);
        let t = PrefixTrie::build(&[Vec::<i64>::new()]);
        assert_eq!(t.root().ends, vec![0]);
    }
}
