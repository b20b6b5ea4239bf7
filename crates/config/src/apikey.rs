//! The obleth API key format `obk_<public_id>_<secret>`: generating, parsing and hashing keys.
//!
//! A key is shown to its owner once. Only the SHA-256 of the secret part is
//! stored; the public id names the key in logs and listings without revealing
//! anything that authenticates.

use std::fmt;

use rand::distr::{Alphanumeric, Distribution};
use rand::Rng;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this.
pub const PREFIX: &str = "obk_";
/// Length of the public id, characters `[a-z0-9]`.
pub const PUBLIC_ID_LEN: usize = 12;
/// Length of the secret, characters `[A-Za-z0-9]` (about 238 bits of entropy).
pub const SECRET_LEN: usize = 40;

const PUBLIC_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A freshly generated key. `secret` is the whole `obk_..._...` string, to be
/// shown to its owner once and then forgotten; only `secret_hash` is stored.
pub struct GeneratedKey {
    pub public_id: String,
    pub secret: SecretString,
    pub secret_hash: [u8; 32],
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("public_id", &self.public_id)
            .field("secret", &"[redacted]")
            .field("secret_hash", &HashPrefix(&self.secret_hash))
            .finish()
    }
}

/// The two parts of a presented key, borrowed from it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PresentedKey<'a> {
    pub public_id: &'a str,
    pub secret: &'a str,
}

impl PresentedKey<'_> {
    /// The SHA-256 of the secret part, the value keys are looked up by.
    pub fn hash(&self) -> [u8; 32] {
        hash_secret(self.secret)
    }
}

impl fmt::Debug for PresentedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey")
            .field("public_id", &self.public_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Why a presented string is not an obleth key. The messages never repeat the
/// key, since a malformed key may still be someone's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key does not start with `obk_`")]
    WrongPrefix,
    #[error("the key is not shaped `obk_<public id>_<secret>`")]
    WrongShape,
    #[error("the key's {0} contains a character that is not allowed")]
    BadCharacter(KeyPart),
    #[error("the key's {0} has the wrong length")]
    WrongLength(KeyPart),
}

/// Which part of a key a [`KeyFormatError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    PublicId,
    Secret,
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyPart::PublicId => "public id",
            KeyPart::Secret => "secret",
        })
    }
}

/// Generates a new key from the thread-local CSPRNG (ChaCha seeded from the OS).
pub fn generate() -> GeneratedKey {
    let mut rng = rand::rng();
    let public_id: String = (0..PUBLIC_ID_LEN)
        .map(|_| char::from(PUBLIC_ID_ALPHABET[rng.random_range(0..PUBLIC_ID_ALPHABET.len())]))
        .collect();
    generate_for(&public_id)
}

/// A new secret for the key with `public_id` (rotation keeps the public id).
pub fn generate_for(public_id: &str) -> GeneratedKey {
    let secret: String = Alphanumeric
        .sample_iter(&mut rand::rng())
        .take(SECRET_LEN)
        .map(char::from)
        .collect();
    let secret_hash = hash_secret(&secret);
    GeneratedKey {
        secret: SecretString::from(from_parts(public_id, &secret)),
        public_id: public_id.to_owned(),
        secret_hash,
    }
}

/// Splits a presented key into its public id and secret, checking the format.
///
/// Checks run in the order prefix, shape, characters, length, so the error
/// names the first thing wrong. The work is linear in the input and the input
/// is not secret-dependent beyond its format, so it leaks nothing useful.
pub fn parse(presented: &str) -> Result<PresentedKey<'_>, KeyFormatError> {
    let rest = presented
        .strip_prefix(PREFIX)
        .ok_or(KeyFormatError::WrongPrefix)?;
    let (public_id, secret) = rest.split_once('_').ok_or(KeyFormatError::WrongShape)?;
    if public_id.is_empty() || secret.is_empty() || secret.contains('_') {
        return Err(KeyFormatError::WrongShape);
    }
    if !public_id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(KeyFormatError::BadCharacter(KeyPart::PublicId));
    }
    if !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::BadCharacter(KeyPart::Secret));
    }
    if public_id.len() != PUBLIC_ID_LEN {
        return Err(KeyFormatError::WrongLength(KeyPart::PublicId));
    }
    if secret.len() != SECRET_LEN {
        return Err(KeyFormatError::WrongLength(KeyPart::Secret));
    }
    Ok(PresentedKey { public_id, secret })
}

/// The SHA-256 of a key's secret part. The secret has ~238 bits of entropy, so
/// a plain, unsalted hash is enough and keeps lookups a single index probe.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two hashes in time that does not depend on where they differ.
/// Slices of different lengths are unequal.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Joins a public id and a secret into the presented form, for tests and tools.
pub fn from_parts(public_id: &str, secret: &str) -> String {
    format!("{PREFIX}{public_id}_{secret}")
}

/// Shows the first bytes of a hash as hex, enough to tell hashes apart in logs.
pub(crate) struct HashPrefix<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for HashPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(4)];
        write!(f, "{}…", hex::encode(shown))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    const ID: &str = "abc123def456";
    const SECRET: &str = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd";

    fn check(input: &str, expected: Result<(&str, &str), KeyFormatError>) {
        let got = parse(input).map(|k| (k.public_id, k.secret));
        assert_eq!(got, expected, "parsing {input:?}");
    }

    #[test]
    fn parse_accepts_well_formed_keys_and_names_the_first_fault() {
        use KeyFormatError::*;
        use KeyPart::*;
        let good = from_parts(ID, SECRET);
        check(&good, Ok((ID, SECRET)));
        let cases: &[(String, KeyFormatError)] = &[
            (String::new(), WrongPrefix),
            ("obk".to_owned(), WrongPrefix),
            (format!("OBK_{ID}_{SECRET}"), WrongPrefix),
            (format!("sk_{ID}_{SECRET}"), WrongPrefix),
            (format!(" obk_{ID}_{SECRET}"), WrongPrefix),
            ("obk_".to_owned(), WrongShape),
            (format!("obk_{ID}{SECRET}"), WrongShape),
            (format!("obk__{SECRET}"), WrongShape),
            (format!("obk_{ID}_"), WrongShape),
            (format!("obk_{ID}_{SECRET}_x"), WrongShape),
            (format!("obk_{ID}__{SECRET}"), WrongShape),
            (format!("obk_ABC123DEF456_{SECRET}"), BadCharacter(PublicId)),
            (format!("obk_abc-23def456_{SECRET}"), BadCharacter(PublicId)),
            (format!("obk_{ID}_{SECRET} "), BadCharacter(Secret)),
            (format!("obk_{ID}_{}é", &SECRET[..39]), BadCharacter(Secret)),
            (format!("obk_abc123_{SECRET}"), WrongLength(PublicId)),
            (format!("obk_{ID}0_{SECRET}"), WrongLength(PublicId)),
            (format!("obk_{ID}_{}", &SECRET[..39]), WrongLength(Secret)),
            (format!("obk_{ID}_{SECRET}a"), WrongLength(Secret)),
        ];
        for (input, err) in cases {
            check(input, Err(*err));
        }
    }

    #[test]
    fn error_messages_are_lowercase_and_never_echo_the_key() {
        let inputs = [
            format!("sk_{ID}_{SECRET}"),
            format!("obk_{ID}{SECRET}"),
            format!("obk_{ID}_{SECRET}!"),
            format!("obk_{ID}_{SECRET}a"),
        ];
        for input in inputs {
            let msg = parse(&input).unwrap_err().to_string();
            assert!(!msg.contains(SECRET) && !msg.contains(ID), "{msg}");
            assert!(msg.starts_with(char::is_lowercase), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
    }

    #[test]
    fn a_thousand_generated_keys_parse_back_and_hash_consistently() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let key = generate();
            let full = key.secret.expose_secret();
            let parsed = parse(full).unwrap();
            assert_eq!(parsed.public_id, key.public_id);
            assert_eq!(parsed.public_id.len(), PUBLIC_ID_LEN);
            assert_eq!(parsed.secret.len(), SECRET_LEN);
            assert_eq!(parsed.hash(), key.secret_hash);
            assert!(hashes_equal(&hash_secret(parsed.secret), &key.secret_hash));
            assert_eq!(from_parts(parsed.public_id, parsed.secret), full);
            assert!(seen.insert(key.secret_hash), "duplicate key generated");
        }
    }

    #[test]
    fn hash_is_sha256_of_the_secret_part() {
        // sha256("abc"), the FIPS 180-2 test vector.
        assert_eq!(
            hex::encode(hash_secret("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashes_equal_compares_content_and_length() {
        let a = hash_secret("a");
        let b = hash_secret("b");
        let cases: &[(&[u8], &[u8], bool)] = &[
            (&a, &a, true),
            (&a, &b, false),
            (&a, &a[..31], false),
            (&[], &[], true),
        ];
        for (x, y, expected) in cases {
            assert_eq!(hashes_equal(x, y), *expected);
        }
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let key = generate();
        let full = key.secret.expose_secret().to_owned();
        let parsed = parse(&full).unwrap();
        for shown in [format!("{key:?}"), format!("{parsed:?}")] {
            assert!(!shown.contains(parsed.secret), "{shown}");
            assert!(shown.contains(&key.public_id), "{shown}");
        }
        assert!(!format!("{key:?}").contains(&hex::encode(key.secret_hash)));
    }
}
