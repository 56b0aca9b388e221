//! Secret tokens for reviewers and admins: 256 random bits, shown once, stored only as their
//! SHA-256, and compared in constant time.

use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token's SHA-256.
pub type TokenHash = [u8; 32];

/// A fresh token: 32 bytes from the operating system's generator, hex-encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the operating system's random generator failed");
    hex(&bytes)
}

/// The SHA-256 of `token`.
pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `a` equals `b`, in time independent of where they differ.
pub fn equal(a: &TokenHash, b: &TokenHash) -> bool {
    a.ct_eq(b).into()
}

/// The entry of `known` whose hash is `token`'s, checking every entry (no early exit).
pub fn find<T: Copy>(token: &str, known: &[(T, TokenHash)]) -> Option<T> {
    let presented = hash(token);
    let mut found = None;
    for (id, h) in known {
        if equal(&presented, h) {
            found = Some(*id);
        }
    }
    found
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_found_only_by_themselves() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let known = [(1, hash(&a)), (2, hash(&b))];
        assert_eq!(find(&a, &known), Some(1));
        assert_eq!(find(&b, &known), Some(2));
        assert_eq!(find("guess", &known), None);
    }
}
