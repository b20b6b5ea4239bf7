//! AWS credentials: parsed from a provider's credential (a JSON object or
//! an AWS shared-credentials INI file), or found in the gateway's
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), or obtained through web identity
//! ([`crate::aws::sts`]). The secret parts are `SecretString`s and `Debug`
//! prints only the access key id.

use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

/// One set of AWS credentials.
#[derive(Clone)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
    /// When temporary credentials stop working.
    pub expires: Option<SystemTime>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires", &self.expires)
            .finish()
    }
}

/// Why a credential is not usable AWS credentials. No variant carries a
/// value from the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("the credential is neither a JSON object nor an AWS credentials file")]
    Unreadable,
    #[error("the credential has no `{0}`")]
    Missing(&'static str),
    #[error("`{0}` has characters a header cannot carry")]
    NotHeaderSafe(&'static str),
}

impl AwsKeys {
    /// Reads a provider's credential: a JSON object
    /// `{"access_key_id", "secret_access_key", "session_token"?}` (the
    /// `AccessKeyId`, `SecretAccessKey` and `SessionToken` spellings of
    /// the AWS CLI's `credential_process` output are taken too), or an AWS
    /// shared-credentials INI file whose `[default]` profile (else its
    /// first) has `aws_access_key_id` and `aws_secret_access_key`.
    pub fn parse(text: &str) -> Result<AwsKeys, KeysError> {
        let trimmed = text.trim_start();
        let (id, secret, token) = if trimmed.starts_with('{') {
            let value: serde_json::Value =
                serde_json::from_str(trimmed).map_err(|_| KeysError::Unreadable)?;
            let get = |names: [&str; 2]| {
                names
                    .iter()
                    .find_map(|n| value.get(*n).and_then(serde_json::Value::as_str))
                    .map(str::to_owned)
            };
            (
                get(["access_key_id", "AccessKeyId"]),
                get(["secret_access_key", "SecretAccessKey"]),
                get(["session_token", "SessionToken"]),
            )
        } else {
            let profile = ini_profile(text).ok_or(KeysError::Unreadable)?;
            let get = |name: &str| {
                profile
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            (
                get("aws_access_key_id"),
                get("aws_secret_access_key"),
                get("aws_session_token"),
            )
        };
        Self::from_parts(id, secret, token.filter(|t| !t.is_empty()), None)
    }

    /// Credentials from their parts, refusing missing ones and values that
    /// cannot go into a header.
    pub fn from_parts(
        id: Option<String>,
        secret: Option<String>,
        token: Option<String>,
        expires: Option<SystemTime>,
    ) -> Result<AwsKeys, KeysError> {
        let id = id
            .filter(|s| !s.is_empty())
            .ok_or(KeysError::Missing("access_key_id"))?;
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or(KeysError::Missing("secret_access_key"))?;
        let safe = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if !safe(&id) {
            return Err(KeysError::NotHeaderSafe("access_key_id"));
        }
        if !safe(&secret) {
            return Err(KeysError::NotHeaderSafe("secret_access_key"));
        }
        if token.as_deref().is_some_and(|t| !safe(t)) {
            return Err(KeysError::NotHeaderSafe("session_token"));
        }
        Ok(AwsKeys {
            access_key_id: id,
            secret_access_key: SecretString::from(secret),
            session_token: token.map(SecretString::from),
            expires,
        })
    }

    /// The gateway's environment's credentials, when
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` are both set.
    pub fn from_env() -> Option<Result<AwsKeys, KeysError>> {
        let id = std::env::var("AWS_ACCESS_KEY_ID").ok()?;
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok()?;
        let token = std::env::var("AWS_SESSION_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        Some(Self::from_parts(Some(id), Some(secret), token, None))
    }

    /// As the signing crate takes them.
    pub fn to_credentials(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose_secret().to_owned(),
            self.session_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            self.expires,
            "obleth",
        )
    }
}

/// The `key = value` pairs of an INI file's `[default]` profile, else of
/// its first; `None` when it has no profile.
fn ini_profile(text: &str) -> Option<Vec<(String, String)>> {
    let mut profiles: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            profiles.push((name.trim().to_owned(), Vec::new()));
            continue;
        }
        let (Some((_, pairs)), Some((key, value))) = (profiles.last_mut(), line.split_once('='))
        else {
            return None;
        };
        pairs.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    let position = profiles
        .iter()
        .position(|(name, _)| name == "default")
        .unwrap_or(0);
    if profiles.is_empty() {
        return None;
    }
    Some(profiles.swap_remove(position).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_ini_credentials_are_read_and_never_printed() {
        let json = AwsKeys::parse(
            r#"{"access_key_id":"AKIDJSON","secret_access_key":"s3cr3t","session_token":"tok3n"}"#,
        )
        .unwrap();
        assert_eq!(json.access_key_id, "AKIDJSON");
        assert_eq!(json.secret_access_key.expose_secret(), "s3cr3t");
        let printed = format!("{json:?}");
        assert!(
            !printed.contains("s3cr3t") && !printed.contains("tok3n"),
            "{printed}"
        );
        let ini = AwsKeys::parse(
            "# rotated\n[other]\naws_access_key_id = A\naws_secret_access_key = B\n\n[default]\naws_access_key_id = AKIDINI\naws_secret_access_key = sec\n",
        )
        .unwrap();
        assert_eq!(ini.access_key_id, "AKIDINI");
        assert!(ini.session_token.is_none());
        let cli = AwsKeys::parse(
            r#"{"Version":1,"AccessKeyId":"X","SecretAccessKey":"Y","SessionToken":"Z"}"#,
        )
        .unwrap();
        assert_eq!(cli.access_key_id, "X");
    }

    #[test]
    fn bad_credentials_name_what_is_wrong_without_values() {
        for (text, expected) in [
            ("", KeysError::Unreadable),
            ("just a key", KeysError::Unreadable),
            ("{not json", KeysError::Unreadable),
            (
                r#"{"secret_access_key":"s"}"#,
                KeysError::Missing("access_key_id"),
            ),
            (
                "[default]\naws_access_key_id = A\n",
                KeysError::Missing("secret_access_key"),
            ),
            (
                r#"{"access_key_id":"A B","secret_access_key":"s"}"#,
                KeysError::NotHeaderSafe("access_key_id"),
            ),
        ] {
            assert_eq!(AwsKeys::parse(text).unwrap_err(), expected, "{text}");
        }
    }
}
