//! What the consumer credentials need beyond their schemas: Kong's password hash and key
//! generation.

use sha1::{Digest, Sha1};
use uuid::Uuid;

/// Kong's basic-auth hash (`kong/plugins/basic-auth/crypto.lua`, 3.x): the lowercase hex SHA-1
/// of the password followed by the consumer's id, which salts it. Kept as Kong computes it so
/// credentials move between Kong and Sluice unchanged.
pub fn hash_password(password: &str, consumer: Uuid) -> String {
    let mut hasher = Sha1::new();
    hasher.update(password.as_bytes());
    hasher.update(consumer.to_string().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A new API key as Kong makes one when none is given (`kong.tools.rand.random_string`): 32
/// lowercase hex characters from the operating system's random source.
pub fn generate_key() -> String {
    Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash Kong stores for password "secret" of this consumer (computed as Kong does:
    /// `sha1("secret" .. consumer_id)`; checked with `printf %s ... | sha1sum`).
    #[test]
    fn kong_hash() {
        let consumer = Uuid::parse_str("6f6fb5d4-36e1-4d7a-9d5f-1c7a2c9e3d10").unwrap();
        assert_eq!(
            hash_password("secret", consumer),
            "8eb3006a6d7d49b616c1d4652da307b918f6ad94"
        );
    }

    #[test]
    fn generated_keys_are_32_hex_and_differ() {
        let (a, b) = (generate_key(), generate_key());
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
