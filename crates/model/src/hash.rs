//! A hasher for keys that are already hashes (xxh3 identifier and message keys) or small
//! integers (profile ids): much cheaper than SipHash, and safe because no untrusted input
//! chooses these keys directly.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Folds already-uniform keys instead of hashing them again.
#[derive(Debug, Default, Clone, Copy)]
pub struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u128(&mut self, x: u128) {
        // xxh3 outputs: any 64 bits of them are well mixed.
        self.0 ^= x as u64;
    }
    fn write_usize(&mut self, _: usize) {
        // The length prefix of an array key (`[u64; 2]`) carries nothing.
    }
}

/// A hash map with [`FoldHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FoldHasher>>;

/// A hash set with [`FoldHasher`].
pub type FastSet<K> = HashSet<K, BuildHasherDefault<FoldHasher>>;
