//! Finding special tokens written literally in the input.
//!
//! Same result as llama.cpp's `tokenizer_st_partition`: special tokens are
//! taken longest first; each one claims, left to right, every occurrence that
//! lies wholly in text no longer token has claimed. llama.cpp searches the
//! text once per special token; here one pass over a byte trie finds every
//! occurrence of every special token, and the claiming is replayed on those,
//! so the cost does not grow with the number of special tokens.

/// A piece of input: text still to be pre-tokenized, or a special token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'t> {
    Text(&'t str),
    Special(u32),
}

#[derive(Clone, Copy)]
struct Entry {
    id: u32,
    /// Position in longest-first order.
    order: u32,
    len: u32,
    /// Matched only when the caller asks to parse special tokens (control
    /// and unknown tokens); user-defined tokens are always matched.
    gated: bool,
}

#[derive(Default)]
struct Node {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    entry: Option<Entry>,
}

/// A byte trie of the special tokens' texts.
pub(crate) struct SpecialMatcher {
    nodes: Vec<Node>,
    /// Child of the root for each first byte (0: none; the root is node 0).
    root: [u32; 256],
}

impl SpecialMatcher {
    /// `specials`: `(id, text, gated)`. Empty texts are ignored; of two
    /// tokens with the same text, the one with the higher id is kept (as in
    /// llama.cpp's `token_to_id`).
    pub(crate) fn new(specials: &[(u32, &str, bool)]) -> Self {
        let mut sorted: Vec<&(u32, &str, bool)> =
            specials.iter().filter(|(_, t, _)| !t.is_empty()).collect();
        // llama.cpp sorts by length only (unstable); ties go by id here.
        sorted.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let mut m = Self {
            nodes: vec![Node::default()],
            root: [0; 256],
        };
        for (order, &&(id, text, gated)) in sorted.iter().enumerate() {
            let node = m.insert(text.as_bytes());
            let entry = Entry {
                id,
                // Counts and lengths are bounded by the vocabulary limits.
                order: order as u32,
                len: text.len() as u32,
                gated,
            };
            let slot = &mut m.nodes[node].entry;
            if slot.is_none_or(|e| e.id < id) {
                *slot = Some(entry);
            }
        }
        m
    }

    fn insert(&mut self, text: &[u8]) -> usize {
        let mut node = 0usize;
        for (depth, &b) in text.iter().enumerate() {
            let found = if depth == 0 {
                Some(self.root[usize::from(b)]).filter(|&c| c != 0)
            } else {
                let ch = &self.nodes[node].children;
                ch.binary_search_by_key(&b, |c| c.0).ok().map(|i| ch[i].1)
            };
            node = match found {
                Some(child) => child as usize,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node::default());
                    // Node count is bounded by the total length of the
                    // special tokens' texts, far below u32::MAX.
                    let c = child as u32;
                    if depth == 0 {
                        self.root[usize::from(b)] = c;
                    } else {
                        let ch = &mut self.nodes[node].children;
                        let at = ch.partition_point(|x| x.0 < b);
                        ch.insert(at, (b, c));
                    }
                    child
                }
            };
        }
        node
    }

    /// Splits `text` into plain text and special tokens.
    pub(crate) fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let bytes = text.as_bytes();
        // Every occurrence: (order, start).
        let mut found: Vec<(u32, u32, Entry)> = Vec::new();
        for start in 0..bytes.len() {
            let mut node = self.root[usize::from(bytes[start])] as usize;
            let mut pos = start + 1;
            while node != 0 {
                let n = &self.nodes[node];
                if let Some(e) = n.entry
                    && (parse_special || !e.gated)
                {
                    // Input length is bounded by the caller below 4 GiB.
                    found.push((e.order, start as u32, e));
                }
                let Some(&b) = bytes.get(pos) else { break };
                node = match n.children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => n.children[i].1 as usize,
                    Err(_) => 0,
                };
                pos += 1;
            }
        }
        if found.is_empty() {
            return if text.is_empty() {
                Vec::new()
            } else {
                vec![Fragment::Text(text)]
            };
        }
        found.sort_unstable_by_key(|&(order, start, _)| (order, start));

        // Replay llama.cpp's claiming. Tokens come longest first, so a
        // claimed span is at least as long as the candidate; if it overlaps
        // the candidate it covers the candidate's first or last byte.
        let mut claimed = vec![false; bytes.len()];
        let mut taken: Vec<(usize, Entry)> = Vec::new();
        for &(_, start, e) in &found {
            let (s, end) = (start as usize, start as usize + e.len as usize);
            if claimed[s] || claimed[end - 1] {
                continue;
            }
            claimed[s..end].fill(true);
            taken.push((s, e));
        }
        taken.sort_unstable_by_key(|&(s, _)| s);

        let mut out = Vec::with_capacity(2 * taken.len() + 1);
        let mut last = 0;
        for (s, e) in taken {
            // Special token texts are whole UTF-8 strings, so their
            // occurrences start and end on character boundaries.
            if let Some(t) = text.get(last..s).filter(|t| !t.is_empty()) {
                out.push(Fragment::Text(t));
            }
            out.push(Fragment::Special(e.id));
            last = s + e.len as usize;
        }
        if let Some(t) = text.get(last..).filter(|t| !t.is_empty()) {
            out.push(Fragment::Text(t));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Fragment::{Special, Text};

    fn matcher() -> SpecialMatcher {
        SpecialMatcher::new(&[
            (0, "<|endoftext|>", true),
            (1, "<|im_start|>", true),
            (2, "<|im_end|>", true),
            (3, "<think>", false),
            (4, "", true),
        ])
    }

    #[test]
    fn finds_specials_between_text() {
        let m = matcher();
        assert_eq!(
            m.partition("<|im_start|>user\nhi<|im_end|>\n", true),
            [Special(1), Text("user\nhi"), Special(2), Text("\n")]
        );
        assert_eq!(
            m.partition("<|im_end|><|im_end|>", true),
            [Special(2), Special(2)]
        );
        assert_eq!(m.partition("", true), []);
        assert_eq!(m.partition("plain", true), [Text("plain")]);
        assert_eq!(m.partition("<|im_sta", true), [Text("<|im_sta")]);
    }

    #[test]
    fn control_tokens_need_parse_special_user_defined_do_not() {
        let m = matcher();
        assert_eq!(
            m.partition("<|im_start|><think>", false),
            [Text("<|im_start|>"), Special(3)]
        );
    }

    #[test]
    fn longer_tokens_claim_first() {
        // "ab" is listed first but "bcd" is longer: llama.cpp takes "bcd".
        let m = SpecialMatcher::new(&[(7, "ab", true), (8, "bcd", true)]);
        assert_eq!(m.partition("abcd", true), [Text("a"), Special(8)]);
        assert_eq!(m.partition("abab", true), [Special(7), Special(7)]);
        // Overlapping occurrences of one token: left to right.
        let m = SpecialMatcher::new(&[(9, "aa", true)]);
        assert_eq!(m.partition("aaa", true), [Special(9), Text("a")]);
    }
}
