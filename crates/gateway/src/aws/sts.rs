//! The credentials a `bedrock` provider without a `credential_ref` signs
//! with: the environment's (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), else web identity (IRSA: `AWS_ROLE_ARN` and
//! `AWS_WEB_IDENTITY_TOKEN_FILE`) exchanged at STS
//! (`AssumeRoleWithWebIdentity`, at `AWS_ENDPOINT_URL_STS` or the
//! region's endpoint) through the gateway's own upstream client. STS's
//! credentials are kept until five minutes before they expire; the token
//! file is read again at each exchange (Kubernetes rotates it).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use secrecy::SecretString;
use serde::Deserialize;

use super::{AwsKeys, KeysError};
use crate::connection::UpClient;
use obleth_config::egress::url_host;
use obleth_config::EgressSettings;

/// How long before their expiry STS credentials are exchanged again.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// The most an STS answer may weigh.
const ANSWER_CAP: usize = 64 * 1024;
/// How long the exchange may take.
const STS_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no ambient credentials could be had. The messages name variables,
/// files and STS's error code, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum AmbientError {
    #[error("no AWS credentials: the provider has no credential_ref, and neither AWS_ACCESS_KEY_ID with AWS_SECRET_ACCESS_KEY nor AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE is set")]
    None,
    #[error("the environment's AWS credentials: {0}")]
    Env(KeysError),
    #[error("cannot read AWS_WEB_IDENTITY_TOKEN_FILE {path}: {error}")]
    TokenFile { path: String, error: String },
    #[error("STS AssumeRoleWithWebIdentity failed: {0}")]
    Sts(String),
}

/// Which web identity exchange a cached answer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    role_arn: String,
    token_file: String,
    endpoint: String,
}

/// The last answer of each exchange (one per STS endpoint in use:
/// providers of several regions without `AWS_ENDPOINT_URL_STS`).
static CACHE: tokio::sync::Mutex<Option<HashMap<Identity, AwsKeys>>> =
    tokio::sync::Mutex::const_new(None);

/// The ambient credentials for a provider in `region`: the environment's,
/// else web identity's (cached, exchanged again shortly before expiry).
pub async fn ambient(
    client: &UpClient,
    egress: &EgressSettings,
    region: &str,
) -> Result<AwsKeys, AmbientError> {
    if let Some(keys) = AwsKeys::from_env() {
        return keys.map_err(AmbientError::Env);
    }
    let (Ok(role_arn), Ok(token_file)) = (
        std::env::var("AWS_ROLE_ARN"),
        std::env::var("AWS_WEB_IDENTITY_TOKEN_FILE"),
    ) else {
        return Err(AmbientError::None);
    };
    let endpoint = std::env::var("AWS_ENDPOINT_URL_STS")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
    let identity = Identity {
        role_arn,
        token_file,
        endpoint,
    };
    // One exchange at a time: requests that find the cache stale wait for
    // the first one's answer instead of each calling STS.
    let mut cache = CACHE.lock().await;
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(keys) = cache.get(&identity) {
        let fresh = keys
            .expires
            .is_some_and(|at| at > SystemTime::now() + REFRESH_BEFORE);
        if fresh {
            return Ok(keys.clone());
        }
    }
    let keys = exchange(client, egress, &identity).await?;
    tracing::info!(role_arn = %identity.role_arn, access_key_id = %keys.access_key_id, "AWS web identity credentials obtained from STS.");
    cache.insert(identity, keys.clone());
    Ok(keys)
}

/// One `AssumeRoleWithWebIdentity` call.
async fn exchange(
    client: &UpClient,
    egress: &EgressSettings,
    identity: &Identity,
) -> Result<AwsKeys, AmbientError> {
    let token =
        std::fs::read_to_string(&identity.token_file).map_err(|e| AmbientError::TokenFile {
            path: identity.token_file.clone(),
            error: e.to_string(),
        })?;
    let token = SecretString::from(token.trim().to_owned());
    let session = std::env::var("AWS_ROLE_SESSION_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "obleth-gateway".to_owned());
    let body = {
        use secrecy::ExposeSecret;
        form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "AssumeRoleWithWebIdentity")
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", &identity.role_arn)
            .append_pair("RoleSessionName", &session)
            .append_pair("WebIdentityToken", token.expose_secret())
            .finish()
    };
    let url = format!("{}/", identity.endpoint.trim_end_matches('/'));
    // IP literals and metadata names are judged here, as for providers:
    // the resolver sees names only.
    if let Some(host) = url_host(&url) {
        egress
            .check_host(host)
            .map_err(|reason| AmbientError::Sts(format!("{url} refused: {reason}")))?;
    }
    let request = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "text/xml")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| AmbientError::Sts(format!("invalid STS endpoint {url}: {e}")))?;
    let response = tokio::time::timeout(STS_TIMEOUT, client.request(request))
        .await
        .map_err(|_| AmbientError::Sts(format!("{url} did not answer within {STS_TIMEOUT:?}")))?
        .map_err(|e| AmbientError::Sts(format!("cannot reach {url}: {e}")))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), ANSWER_CAP)
        .collect()
        .await
        .map_err(|e| AmbientError::Sts(format!("cannot read the answer: {e}")))?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    if !status.is_success() {
        let why = quick_xml::de::from_str::<ErrorResponse>(&text)
            .map(|e| format!("{}: {}", e.error.code, e.error.message))
            .unwrap_or_else(|_| "an unreadable error".to_owned());
        return Err(AmbientError::Sts(format!("{status}: {why}")));
    }
    parse_answer(&text)
}

/// STS's XML answer's credentials.
fn parse_answer(text: &str) -> Result<AwsKeys, AmbientError> {
    let answer: AssumeRoleResponse = quick_xml::de::from_str(text)
        .map_err(|e| AmbientError::Sts(format!("an unreadable answer: {e}")))?;
    let c = answer.result.credentials;
    let expires = chrono::DateTime::parse_from_rfc3339(c.expiration.trim())
        .map_err(|_| AmbientError::Sts("an unreadable Expiration".to_owned()))?;
    let expires = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(expires.timestamp()).unwrap_or(0));
    AwsKeys::from_parts(
        Some(c.access_key_id),
        Some(c.secret_access_key),
        Some(c.session_token).filter(|t| !t.is_empty()),
        Some(expires),
    )
    .map_err(|e| AmbientError::Sts(e.to_string()))
}

#[derive(Deserialize)]
struct AssumeRoleResponse {
    #[serde(rename = "AssumeRoleWithWebIdentityResult")]
    result: AssumeRoleResult,
}

#[derive(Deserialize)]
struct AssumeRoleResult {
    #[serde(rename = "Credentials")]
    credentials: StsCredentials,
}

#[derive(Deserialize)]
struct StsCredentials {
    #[serde(rename = "AccessKeyId")]
    access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: String,
    #[serde(rename = "SessionToken", default)]
    session_token: String,
    #[serde(rename = "Expiration")]
    expiration: String,
}

#[derive(Deserialize)]
struct ErrorResponse {
    #[serde(rename = "Error")]
    error: StsError,
}

#[derive(Deserialize)]
struct StsError {
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn sts_answers_are_read_with_their_expiry_and_bad_ones_refused() {
        let answer = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>
    <Credentials>
      <SessionToken>TOKEN&amp;1</SessionToken>
      <SecretAccessKey>SECRET</SecretAccessKey>
      <Expiration>2030-01-02T03:04:05Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;
        let keys = parse_answer(answer).unwrap();
        assert_eq!(keys.access_key_id, "ASIAEXAMPLE");
        assert_eq!(keys.session_token.unwrap().expose_secret(), "TOKEN&1");
        assert_eq!(
            keys.expires,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_553_445))
        );
        for bad in [
            "",
            "<x/>",
            "not xml",
            &answer.replace("2030-01-02T03:04:05Z", "soon"),
        ] {
            assert!(parse_answer(bad).is_err(), "{bad}");
        }
        let error = r#"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>bad token</Message></Error></ErrorResponse>"#;
        let e: ErrorResponse = quick_xml::de::from_str(error).unwrap();
        assert_eq!(
            (e.error.code.as_str(), e.error.message.as_str()),
            ("InvalidIdentityToken", "bad token")
        );
    }
}
