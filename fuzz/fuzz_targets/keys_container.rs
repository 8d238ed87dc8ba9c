//! The container and wrapped-key parsers, and the chunk decoder, on
//! untrusted bytes: nothing may panic, hang or allocate without bound.
//!
//! Three uses of each input:
//! 1. as a container header and as a wrapped-key file;
//! 2. as the chunk stream after a valid, authenticated header;
//! 3. as a list of (offset, xor) edits applied to a valid container, which
//!    reaches the reordering/splicing diagnosis and the digest check.
#![no_main]

use std::num::NonZeroUsize;
use std::sync::OnceLock;

use confidant_keys::{
    ChunkSize, DataKey, Decryptor, DigestCheck, EncryptParams, Header, KeyId, ModelFormat, PlaintextInfo,
    WrappedKey, encrypt_with_fixed_nonce_prefix_for_test_vectors,
};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7; 32];

fn fixture() -> &'static Vec<u8> {
    static C: OnceLock<Vec<u8>> = OnceLock::new();
    C.get_or_init(|| {
        let plain: Vec<u8> = (0..3 * 4096 + 10).map(|i: u32| (i * 7) as u8).collect();
        let mut p = EncryptParams::new(KeyId::new("fuzz").unwrap(), ModelFormat::Gguf);
        p.chunk_size = ChunkSize::new(4096).unwrap();
        let mut out = Vec::new();
        encrypt_with_fixed_nonce_prefix_for_test_vectors(
            &DataKey::from_bytes(&KEY),
            &p,
            &PlaintextInfo::of(&plain),
            [1; 7],
            &plain[..],
            &mut out,
        )
        .unwrap();
        out
    })
}

fn decrypt_all(container: &[u8]) {
    let key = DataKey::from_bytes(&KEY);
    let Ok(header) = Header::parse(container) else {
        return;
    };
    // Bound the buffer: a fuzzed header may announce terabytes.
    if header.plaintext_len() > 1 << 20 {
        return;
    }
    let Ok(d) = Decryptor::new(header, &key) else {
        return;
    };
    let mut out = vec![0u8; d.header().plaintext_len() as usize];
    let r = d.decrypt_into(container, &mut out, NonZeroUsize::new(2).unwrap());
    if r.is_err() {
        assert!(out.iter().all(|&b| b == 0), "buffer not wiped on error");
    }
    // Digest from the authenticated header: every chunk still verified, so
    // it may succeed only where recomputing did (the fixture's encryptor
    // is honest), and wipes the buffer the same way.
    let mut out2 = vec![0u8; out.len()];
    let r2 = d.decrypt_into_with(
        container,
        &mut out2,
        NonZeroUsize::new(2).unwrap(),
        DigestCheck::AuthenticatedHeader,
    );
    match (&r, &r2) {
        (Ok(_), Ok(_)) => assert!(out == out2, "modes decrypted differently"),
        (Err(_), Err(_)) => assert!(out2.iter().all(|&b| b == 0), "buffer not wiped"),
        (Err(confidant_keys::Error::DigestMismatch { .. }), Ok(_)) => {}
        _ => panic!("digest modes disagree"),
    }
    let mut rest = container;
    if let Ok(h) = Header::read_from(&mut rest) {
        if let Ok(d) = Decryptor::new(h, &key) {
            let _ = d.decrypt_stream(rest, std::io::sink());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. Parsers on raw bytes.
    if let Ok(h) = Header::parse(data) {
        let _ = (h.container_len(), h.chunk_count(), format!("{h:?}"));
    }
    let _ = Header::read_from(&mut &data[..]);
    if let Ok(w) = WrappedKey::parse(data) {
        assert_eq!(WrappedKey::parse(&w.to_bytes()).ok(), Some(w));
    }

    // 2. Arbitrary chunk bytes after a valid header.
    let valid = fixture();
    let hlen = Header::parse(valid).unwrap().len();
    let mut spliced = valid[..hlen].to_vec();
    spliced.extend_from_slice(data);
    decrypt_all(&spliced);

    // 3. Edits of a valid container: (u16 offset, xor byte) pairs; an edit
    //    with xor 0 swaps two 4 KiB chunks instead.
    let mut edited = valid.clone();
    for e in data.chunks_exact(3).take(16) {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % edited.len();
        if e[2] == 0 {
            let (a, b) = (at % 3, (at / 3) % 3);
            if a != b {
                let (ra, rb) = (hlen + a * 4112, hlen + b * 4112);
                for k in 0..4112 {
                    edited.swap(ra + k, rb + k);
                }
            }
        } else {
            edited[at] ^= e[2];
        }
    }
    if data.len() % 7 == 1 {
        edited.truncate(edited.len().saturating_sub(usize::from(data[0])));
    }
    decrypt_all(&edited);
});
