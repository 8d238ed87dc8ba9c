//! Byte-level BPE: GPT-2's byte↔character tables and the merge loop.
//!
//! GPT-2 vocabularies store tokens as text in which every byte is mapped to a
//! printable character (`Ġ` is the space byte, `Ċ` a newline). The merge
//! loop here never builds that text for the input: each input byte starts as
//! the id of its one-character token, and merges are looked up on id pairs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// GPT-2's `bytes_to_unicode()`: printable Latin-1 bytes map to themselves,
/// the other 68 bytes to U+0100.. in increasing byte order.
pub(crate) const BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

/// One past the largest character in [`BYTE_TO_CHAR`] (U+0100 + 68).
const CHAR_TABLE_LEN: usize = 0x100 + 68;

/// The inverse of [`BYTE_TO_CHAR`], indexed by code point; `-1` where a code
/// point is not the image of a byte.
const CHAR_TO_BYTE: [i16; CHAR_TABLE_LEN] = char_to_byte_table();

const fn is_printable_byte(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

const fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    let mut b = 0usize;
    while b < 256 {
        let code = if is_printable_byte(b as u8) {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        // Every code here is below U+0144, a valid scalar value.
        table[b] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

const fn char_to_byte_table() -> [i16; CHAR_TABLE_LEN] {
    let mut table = [-1i16; CHAR_TABLE_LEN];
    let mut b = 0usize;
    while b < 256 {
        table[BYTE_TO_CHAR[b] as usize] = b as i16;
        b += 1;
    }
    table
}

/// The byte a byte-level character stands for, if it stands for one.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let code = c as usize;
    if code < CHAR_TABLE_LEN {
        u8::try_from(CHAR_TO_BYTE[code]).ok()
    } else {
        None
    }
}

/// The bytes a byte-level token text stands for.
///
/// Like Hugging Face's `ByteLevel` decoder, a text with a character outside
/// the byte alphabet is taken as its own UTF-8 bytes.
pub(crate) fn byte_level_decode(text: &str) -> Vec<u8> {
    let decoded: Option<Vec<u8>> = text.chars().map(char_to_byte).collect();
    decoded.unwrap_or_else(|| text.as_bytes().to_vec())
}

/// The text a byte string has in a byte-level vocabulary.
#[cfg(test)]
pub(crate) fn byte_level_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| BYTE_TO_CHAR[usize::from(b)])
        .collect()
}

/// A merge: its priority (lower merges first) and the token it makes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Merge {
    pub(crate) rank: u32,
    pub(crate) result: u32,
}

/// Merges by `(left, right)` token ids.
pub(crate) type MergeMap = HashMap<(u32, u32), Merge, BuildHasherDefault<PairHasher>>;

/// A fast hasher for id pairs. The table's keys come from the model file and
/// input only looks them up, so a keyed (DoS-resistant) hash buys nothing;
/// SipHash was a third of the encoding time.
#[derive(Default)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        // splitmix64's finalizer: every input bit reaches the low bits the
        // table indexes with and the high bits it tags buckets with.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u32(&mut self, x: u32) {
        self.0 = (self.0 << 32) | u64::from(x);
    }
}

/// The merge table of a byte-level BPE vocabulary.
pub(crate) struct Bpe {
    /// The token id of each single byte, [`NO_TOKEN`] if it has none.
    byte_ids: [u32; 256],
    merges: MergeMap,
}

const NONE: u32 = u32::MAX;

/// Marks a byte without a token: it takes part in no merge and is dropped.
pub(crate) const NO_TOKEN: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

/// Buffers reused across the pieces of one `encode` call.
#[derive(Default)]
pub(crate) struct Scratch {
    symbols: Vec<Symbol>,
    /// Candidate merges: lowest rank first, then leftmost.
    queue: BinaryHeap<Reverse<(u32, u32, u32)>>,
}

impl Bpe {
    pub(crate) fn new(byte_ids: [u32; 256], merges: MergeMap) -> Self {
        Self { byte_ids, merges }
    }

    /// Appends the tokens of one pre-token to `out`.
    ///
    /// Classic BPE: repeatedly merge the adjacent pair with the lowest rank,
    /// the leftmost one among equals, until no pair has a merge. A heap over
    /// a linked list of symbols keeps this `O(n log n)` even for a long
    /// pre-token (a run of thousands of letters or spaces).
    pub(crate) fn encode_piece(&self, piece: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        match piece {
            [] => return,
            [b] => {
                let id = self.byte_ids[usize::from(*b)];
                if id != NO_TOKEN {
                    out.push(id);
                }
                return;
            }
            _ => {}
        }
        // Positions are stored as u32; a pre-token is a slice of one `&str`
        // and the caller bounds input length well below 4 GiB.
        let n = piece.len() as u32;
        let symbols = &mut scratch.symbols;
        symbols.clear();
        symbols.extend(piece.iter().enumerate().map(|(i, &b)| {
            let i = i as u32;
            Symbol {
                id: self.byte_ids[usize::from(b)],
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
                alive: true,
            }
        }));
        let queue = &mut scratch.queue;
        queue.clear();
        for left in 0..n - 1 {
            self.push_pair(symbols, queue, left, left + 1);
        }
        while let Some(Reverse((rank, left, right))) = queue.pop() {
            let (l, r) = (left as usize, right as usize);
            // Skip entries made stale by an earlier merge.
            if !symbols[l].alive || symbols[l].next != right || !symbols[r].alive {
                continue;
            }
            let Some(merge) = self.merges.get(&(symbols[l].id, symbols[r].id)) else {
                continue;
            };
            if merge.rank != rank {
                continue;
            }
            symbols[l].id = merge.result;
            symbols[r].alive = false;
            let next = symbols[r].next;
            symbols[l].next = next;
            if next != NONE {
                symbols[next as usize].prev = left;
                self.push_pair(symbols, queue, left, next);
            }
            let prev = symbols[l].prev;
            if prev != NONE {
                self.push_pair(symbols, queue, prev, left);
            }
        }
        let mut i = 0u32;
        while i != NONE {
            let s = symbols[i as usize];
            if s.id != NO_TOKEN {
                out.push(s.id);
            }
            i = s.next;
        }
    }

    fn push_pair(
        &self,
        symbols: &[Symbol],
        queue: &mut BinaryHeap<Reverse<(u32, u32, u32)>>,
        left: u32,
        right: u32,
    ) {
        let pair = (symbols[left as usize].id, symbols[right as usize].id);
        if let Some(m) = self.merges.get(&pair) {
            queue.push(Reverse((m.rank, left, right)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        assert_eq!(BYTE_TO_CHAR[usize::from(b' ')], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[usize::from(b'\n')], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[usize::from(b'\t')], 'ĉ');
        assert_eq!(BYTE_TO_CHAR[usize::from(b'A')], 'A');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[usize::from(b)]), Some(b));
        }
        assert_eq!(char_to_byte('漢'), None);
    }

    #[test]
    fn byte_level_round_trip() {
        let s = "Ünï 🤖\r\n\t x";
        let enc = byte_level_encode(s.as_bytes());
        assert!(enc.chars().all(|c| char_to_byte(c).is_some()));
        assert_eq!(byte_level_decode(&enc), s.as_bytes());
        // Text outside the byte alphabet is its own bytes.
        assert_eq!(byte_level_decode("<|漢|>"), "<|漢|>".as_bytes());
    }

    /// Ids: byte b is token b; merges given as (left, right, result).
    fn bpe(merges: &[(u32, u32, u32)]) -> Bpe {
        let mut byte_ids = [0u32; 256];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            *id = b as u32;
        }
        let merges = merges
            .iter()
            .enumerate()
            .map(|(rank, &(l, r, result))| {
                (
                    (l, r),
                    Merge {
                        rank: rank as u32,
                        result,
                    },
                )
            })
            .collect();
        Bpe::new(byte_ids, merges)
    }

    fn encode(bpe: &Bpe, s: &str) -> Vec<u32> {
        let mut out = Vec::new();
        bpe.encode_piece(s.as_bytes(), &mut Scratch::default(), &mut out);
        out
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        let (a, b, c) = (u32::from(b'a'), u32::from(b'b'), u32::from(b'c'));
        // rank 0: b c → 300, rank 1: a b → 301, rank 2: a 300 → 302
        let m = bpe(&[(b, c, 300), (a, b, 301), (a, 300, 302)]);
        assert_eq!(encode(&m, "abc"), vec![302]);
        assert_eq!(encode(&m, "abab"), vec![301, 301]);
        // Equal pairs merge left to right: "aaa" → "aa" "a".
        let m = bpe(&[(a, a, 400)]);
        assert_eq!(encode(&m, "aaa"), vec![400, a]);
        assert_eq!(encode(&m, "aaaa"), vec![400, 400]);
        assert_eq!(encode(&m, ""), Vec::<u32>::new());
        assert_eq!(encode(&m, "a"), vec![a]);
    }

    #[test]
    fn bytes_without_a_token_are_dropped() {
        let a = u32::from(b'a');
        let mut m = bpe(&[(a, a, 300)]);
        m.byte_ids[0] = NO_TOKEN;
        assert_eq!(encode(&m, "a\0a"), vec![a, a]);
        assert_eq!(encode(&m, "\0"), Vec::<u32>::new());
        assert_eq!(encode(&m, "\0aa\0"), vec![300]);
    }

    #[test]
    fn long_piece_is_fast_and_complete() {
        let a = u32::from(b'a');
        let m = bpe(&[(a, a, 300), (300, 300, 301)]);
        let s = "a".repeat(100_001);
        let ids = encode(&m, &s);
        assert_eq!(ids.len(), 25_001);
        assert!(ids[..25_000].iter().all(|&t| t == 301));
        assert_eq!(ids[25_000], a);
    }
}
