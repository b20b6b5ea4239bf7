//! The admin bearer tokens, kept only as SHA-256 hashes and compared in constant time.

use std::fmt;

use obleth_config::apikey::{hash_secret, hashes_equal};
use obleth_config::{InvalidSetting, SettingsError};
use secrecy::ExposeSecret;

use crate::settings::AuthSettings;

/// Shortest token accepted: 16 characters leave no room for guessing.
pub const MIN_TOKEN_LEN: usize = 16;

/// The hashes of every accepted admin token.
#[derive(Clone)]
pub struct AdminTokens {
    hashes: Vec<[u8; 32]>,
}

impl fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminTokens({} tokens)", self.hashes.len())
    }
}

impl AdminTokens {
    /// Reads the tokens of `auth.tokens` and `auth.token_file`. Errors name the
    /// setting (and the line of the file), never the token.
    pub fn load(auth: &AuthSettings) -> Result<AdminTokens, SettingsError> {
        let mut hashes = Vec::new();
        for (i, token) in auth.tokens.iter().enumerate() {
            hashes.push(check(token.expose_secret(), &format!("auth.tokens[{i}]"))?);
        }
        if let Some(path) = &auth.token_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                InvalidSetting::new(
                    "auth.token_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let place = format!("auth.token_file {} line {}", path.display(), n + 1);
                hashes.push(check(line, &place)?);
            }
        }
        if hashes.is_empty() {
            return Err(InvalidSetting::new(
                "auth.tokens, auth.token_file",
                "no admin token configured; set one of them",
            )
            .into());
        }
        Ok(AdminTokens { hashes })
    }

    /// Whether `presented` is one of the tokens. Every stored hash is compared,
    /// each in constant time, so the time taken says nothing about which token
    /// is close or how many there are before it.
    pub fn verify(&self, presented: &str) -> bool {
        let hash = hash_secret(presented);
        self.hashes
            .iter()
            .fold(false, |found, stored| found | hashes_equal(stored, &hash))
    }
}

impl AdminTokens {
    /// Which token `presented` is (its place in the list), comparing every
    /// stored hash in constant time as [`AdminTokens::verify`] does. The
    /// console binds a session to the token that opened it.
    pub fn position(&self, presented: &str) -> Option<usize> {
        let hash = hash_secret(presented);
        self.hashes
            .iter()
            .enumerate()
            .fold(None, |found, (i, stored)| {
                if hashes_equal(stored, &hash) {
                    Some(i)
                } else {
                    found
                }
            })
    }

    /// The stored hashes, in order: what the console derives its session
    /// keys from, so every replica with the same tokens accepts the same
    /// sessions and removing a token ends the sessions it opened.
    pub fn hashes(&self) -> &[[u8; 32]] {
        &self.hashes
    }
}

/// Checks one token; the error names its place (`auth.tokens[i]`, or the
/// file and line), never the token.
fn check(token: &str, place: &str) -> Result<[u8; 32], InvalidSetting> {
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(InvalidSetting::new(
            place,
            format!("an admin token must be at least {MIN_TOKEN_LEN} characters"),
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidSetting::new(
            place,
            "an admin token must not contain spaces or control characters",
        ));
    }
    Ok(hash_secret(token))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use secrecy::SecretString;

    use super::*;

    #[test]
    fn tokens_from_settings_and_file_are_accepted_and_others_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "# rotated 2026-11\n\nfile-token-0123456789\n").unwrap();
        let auth = AuthSettings {
            tokens: vec![SecretString::from("inline-token-0123456789")],
            token_file: Some(file.path().to_path_buf()),
            ..AuthSettings::default()
        };
        let tokens = AdminTokens::load(&auth).unwrap();
        assert!(tokens.verify("inline-token-0123456789"));
        assert!(tokens.verify("file-token-0123456789"));
        for wrong in ["", "inline-token-012345678", "file-token-0123456789 "] {
            assert!(!tokens.verify(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{tokens:?}"), "AdminTokens(2 tokens)");
    }

    #[test]
    fn bad_tokens_are_refused_naming_the_place_not_the_token() {
        let cases = [
            (vec!["short-secret"], "auth.tokens[0]"),
            (
                vec!["long-enough-token-1", "has a space inside it"],
                "auth.tokens[1]",
            ),
        ];
        for (tokens, place) in cases {
            let auth = AuthSettings {
                tokens: tokens.iter().map(|t| SecretString::from(*t)).collect(),
                token_file: None,
                ..AuthSettings::default()
            };
            let msg = AdminTokens::load(&auth).unwrap_err().to_string();
            assert!(msg.contains(place), "{msg}");
            assert!(tokens.iter().all(|t| !msg.contains(t)), "{msg}");
        }
        let missing = AuthSettings {
            tokens: vec![],
            token_file: Some("/nonexistent/admin-tokens".into()),
            ..AuthSettings::default()
        };
        let msg = AdminTokens::load(&missing).unwrap_err().to_string();
        assert!(msg.contains("auth.token_file"), "{msg}");
    }
}
