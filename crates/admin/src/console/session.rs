//! The console's sessions: stateless, signed cookies, so any admin replica
//! behind a load balancer accepts a session another one opened, with no
//! table and no migration.
//!
//! A cookie is `v1.<tag>.<expires>.<sid>.<mac>`: the tag names the admin token
//! that opened the session (not the token: 8 bytes of a MAC under a key
//! derived from its hash), `expires` is a Unix time, `sid` 16 random bytes,
//! and `mac` an HMAC-SHA256 of the rest under that token's session key. The
//! key is derived from the token's SHA-256 hash, which only the admins hold,
//! so a replica with the same tokens verifies what another signed, and a
//! token removed from `[auth]` ends every session it opened. The CSRF token of
//! a session is a MAC of its `sid` under the same key (a synchronizer token
//! no other session can use). Sign-out clears the cookie in the browser; a
//! copied cookie stays valid until it expires (`console.session_ttl_secs`).

use std::fmt;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::tokens::AdminTokens;

/// The cookie's name.
pub const COOKIE: &str = "obleth_console";

type HmacSha256 = Hmac<Sha256>;

/// What a session key is derived with, so it can never equal another use of
/// the token's hash.
const KEY_LABEL: &[u8] = b"obleth console session key v1";

/// One admin token's session key and the tag that names it in a cookie.
#[derive(Clone)]
struct SessionKey {
    key: [u8; 32],
    tag: String,
}

/// The session keys of every admin token.
#[derive(Clone)]
pub struct SessionKeys {
    keys: Vec<SessionKey>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKeys({} keys)", self.keys.len())
    }
}

/// A verified session.
#[derive(Clone)]
pub struct Session {
    sid: [u8; 16],
    /// Unix seconds.
    pub expires: i64,
    key: [u8; 32],
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes a key of any length; this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            m.update(b".");
        }
        m.update(part);
    }
    m
}

impl SessionKeys {
    pub fn new(tokens: &AdminTokens) -> SessionKeys {
        let keys = tokens
            .hashes()
            .iter()
            .map(|hash| {
                let key: [u8; 32] = mac(KEY_LABEL, &[hash]).finalize().into_bytes().into();
                let tag = hex::encode(&mac(&key, &[b"tag"]).finalize().into_bytes()[..8]);
                SessionKey { key, tag }
            })
            .collect();
        SessionKeys { keys }
    }

    /// A new session for the token at `position`, ending at `expires` (Unix
    /// seconds), and its cookie value; `None` for a position with no token.
    pub fn open(&self, position: usize, expires: i64) -> Option<(Session, String)> {
        let key = self.keys.get(position)?;
        let mut sid = [0u8; 16];
        rand::rng().fill_bytes(&mut sid);
        let value = encode(key, expires, &sid);
        Some((
            Session {
                sid,
                expires,
                key: key.key,
            },
            value,
        ))
    }

    /// The session a cookie value holds, when its MAC is right, its token is
    /// still configured and it has not expired at `now` (Unix seconds).
    pub fn verify(&self, value: &str, now: i64) -> Option<Session> {
        let mut parts = value.split('.');
        let (version, tag, expires, sid, sig) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if version != "v1" || parts.next().is_some() {
            return None;
        }
        let key = self.keys.iter().find(|k| k.tag == tag)?;
        let sig = hex::decode(sig).ok()?;
        mac(
            &key.key,
            &[
                version.as_bytes(),
                tag.as_bytes(),
                expires.as_bytes(),
                sid.as_bytes(),
            ],
        )
        .verify_slice(&sig)
        .ok()?;
        let expires: i64 = expires.parse().ok()?;
        if expires <= now {
            return None;
        }
        let sid: [u8; 16] = hex::decode(sid).ok()?.try_into().ok()?;
        Some(Session {
            sid,
            expires,
            key: key.key,
        })
    }
}

fn encode(key: &SessionKey, expires: i64, sid: &[u8; 16]) -> String {
    let expires = expires.to_string();
    let sid = hex::encode(sid);
    let sig = mac(
        &key.key,
        &[
            b"v1",
            key.tag.as_bytes(),
            expires.as_bytes(),
            sid.as_bytes(),
        ],
    )
    .finalize()
    .into_bytes();
    format!("v1.{}.{expires}.{sid}.{}", key.tag, hex::encode(sig))
}

impl Session {
    /// The CSRF token every form of this session carries.
    pub fn csrf_token(&self) -> String {
        hex::encode(
            mac(&self.key, &[b"csrf", &self.sid])
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn check_csrf(&self, presented: &str) -> bool {
        let Ok(bytes) = hex::decode(presented) else {
            return false;
        };
        mac(&self.key, &[b"csrf", &self.sid])
            .verify_slice(&bytes)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::settings::AuthSettings;

    fn keys(tokens: &[&str]) -> SessionKeys {
        let auth = AuthSettings {
            tokens: tokens.iter().map(|t| SecretString::from(*t)).collect(),
            ..AuthSettings::default()
        };
        SessionKeys::new(&AdminTokens::load(&auth).unwrap())
    }

    #[test]
    fn a_session_verifies_on_any_replica_with_the_same_tokens_until_it_expires() {
        let a = keys(&["first-token-0123456789", "second-token-0123456789"]);
        let b = keys(&["first-token-0123456789", "second-token-0123456789"]);
        let (session, cookie) = a.open(1, 1_000).unwrap();
        let again = b.verify(&cookie, 999).unwrap();
        assert_eq!(again.csrf_token(), session.csrf_token());
        assert!(again.check_csrf(&session.csrf_token()));
        assert!(b.verify(&cookie, 1_000).is_none(), "expired");
        assert!(!format!("{session:?}").contains(&hex::encode(session.sid)));
    }

    #[test]
    fn a_removed_token_ends_its_sessions_and_keeps_the_others() {
        let before = keys(&["first-token-0123456789", "second-token-0123456789"]);
        let after = keys(&["second-token-0123456789", "third-token-0123456789"]);
        let (_, first) = before.open(0, 1_000).unwrap();
        let (_, second) = before.open(1, 1_000).unwrap();
        assert!(after.verify(&first, 0).is_none());
        assert!(after.verify(&second, 0).is_some());
    }

    #[test]
    fn tampered_or_malformed_cookies_are_refused() {
        let k = keys(&["first-token-0123456789"]);
        let (session, cookie) = k.open(0, 1_000).unwrap();
        let parts: Vec<&str> = cookie.split('.').collect();
        let later = format!(
            "{}.{}.{}.{}.{}",
            parts[0], parts[1], "2000", parts[3], parts[4]
        );
        let other_sid = format!(
            "{}.{}.{}.{}.{}",
            parts[0],
            parts[1],
            parts[2],
            "00".repeat(16),
            parts[4]
        );
        for bad in [
            later.as_str(),
            other_sid.as_str(),
            "",
            "v1",
            "v2.a.b.c.d",
            &format!("{cookie}.x"),
            &cookie[..cookie.len() - 2],
        ] {
            assert!(k.verify(bad, 0).is_none(), "{bad}");
        }
        assert!(!session.check_csrf(""));
        assert!(!session.check_csrf("zz"));
        let (other, _) = k.open(0, 1_000).unwrap();
        assert!(!session.check_csrf(&other.csrf_token()));
    }
}
