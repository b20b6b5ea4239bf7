//! The mock's OAuth side for Vertex AI: Google's token endpoint for
//! service-account keys (`POST /oauth2/token`, a JWT bearer assertion signed
//! RS256 with [`TEST_SERVICE_ACCOUNT_PRIVATE_KEY`], checked against its
//! public key), the Security Token Service of workload identity federation
//! (`POST /sts/v1/token`, a token exchange of [`FEDERATION_SUBJECT_TOKEN`])
//! and the metadata server (`GET /computeMetadata/v1/instance/
//! service-accounts/default/token`, with `Metadata-Flavor: Google`). Each
//! answers `{access_token, expires_in, token_type}` with a new token
//! (`ya29.minted-N`) that the Vertex AI endpoints then accept, and counts
//! its calls; [`super::MockUpstream::fail_token_calls`] makes the next ones
//! fail. Refusals are OAuth's shape (`{"error", "error_description"}`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::state::Shared;

/// A private key made for these tests only (`openssl genpkey -algorithm
/// RSA`): it signs nothing anywhere else and protects nothing. The mock
/// checks assertions against its public key; tests put it in the
/// service-account files they write ([`service_account_key`]).
pub const TEST_SERVICE_ACCOUNT_PRIVATE_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCuWOoEodbdK3Pl\n\
m+tC+brTMLEBX2c2/KMFQN+Qqm+RzvF6BemPzDvZC7nfCxxXv1MbP+EoRWZGNIpk\n\
3NH5IKJVDN9Er4t/NAjnHEPc06uWQIucWeU1JIWgxS5JbXI5HlopISwgJp9qBUYT\n\
ayM/wUw0U8MykM6gvAGDPel9LJo+tzPn10SkwC3adpPYC0gJ7TzZzjCXseGp5d5R\n\
mkpkfvTvWZJvndGhwOfH4eoZeHmVmwpwnEH7LiFaNYuKeNCCMqqJVUWtpmvBV1RH\n\
irSJfNwxOQVv1h6OBvrnAr6BgRXHUULN58W1FoIw1Q+tBsJ1UhypXb63kHliUzBj\n\
JfXenQBvAgMBAAECggEANjUV+b+59wUyITNDyAyuXkh22GbpyApvw0vi1u9vBgYy\n\
RU6+SkPlXbwMHAGv28Z0V/YaEvPU80IVv3t623sejdQVPR1ZgYDTvcune+riIDLM\n\
VZ4LqmTDGXQFSrY5O/IodT5Hom1vxj6ChbobeRCoGWLrv3aPkCE0VTJ0PMOX56R5\n\
diun6M1Y6FYpZzFAzZytfCpNAD1JcytmVqYpMibguHyq5ITtwBMFykqFEoIDDRI1\n\
ei/jtx8D/ATfR9WgMfTnrkRyCvwD50+ubRwq7AZyKgSRZCHQuY3b2adlZLE0O+/5\n\
eJXYguSBfjI8LufFXzG90sgfhsbLvhYiOjOup5sPaQKBgQDpykl21oVNk8PutCaB\n\
tc21VmZ8BxMj4M6pQThJ97R+RNY7lReoNEF5vp9JHCtuVqdSbddadRcn1RjGTncq\n\
pKL8S/ICSBzsM3GZ4HJxYbmjuKu8oT/ojV1758O6hM7aawgUkrSFc0dKyzyQ9ux/\n\
LGWeH6eNfW6xqdWs0e+QVjvleQKBgQC+6P46Mpi0MeEW3Ek7go7dpPCTgobJY3D6\n\
yAX9FELkep26+3fBICWvKU/nZrUk7+ylGqQ3JRC14LCBz1CHBWR97LqBrLvSnrgE\n\
6CbuB2nKkODQXVMEVAN25lRkSpuEnDMzsHha85Un2NTZ+7x/fVMgD2ghpkywxmF7\n\
GGDBmCmjJwKBgE9Z3X18alpeYQ5QDxHPhzaZUMegDxsKXpqMDHLupFCHRL+MZy8s\n\
LV0JGj9SVFtrBfewWHvXajiW14XXdBMBNmCz1jx4BXkWLOSxjaZ2KPAs6f1oLazc\n\
7nHzxDc2hI8V7PQupx70daopOTFq3fJ8OzFkRRZ9EGk039V8m/c9ja7hAoGASE0N\n\
GxVWZ8gMKxA6W+NSH/b7daIVUefrPc7LFdG6k7UsT0g1TlrSasgGjuiC6f5DbTPt\n\
xUSwU3FI56CQKtKMAHTLHZlBeL7LinAxbiw4kJLV0ZPGgPkgZsNMar8mrs5JReYr\n\
bqaZcoHX+sYv2UipVpb/JN9KZBh9ipTs7+SkwDkCgYEA0StKMbYHIHqPxrfijaRq\n\
mdDFmFKcbVoW8aAiMUvrSL8jyiZfje1VEprck6JcJcjZ4cOIOYrus9qyBsdFOdTt\n\
XOi3nD7m+1fAlr9QplI7oSbx+pv3KNz70S7NQARHRKsUpUQmwT+UyAHahaXY6TFz\n\
AYBW0JTUFVpn0Xj3bgghDmU=\n\
-----END PRIVATE KEY-----\n\
";

/// The subject token a workload identity federation test file points at
/// (its `credential_source.file`), which the mock's STS exchanges.
pub const FEDERATION_SUBJECT_TOKEN: &str = "mock-kubernetes-service-account-jwt";

/// The scope Vertex AI's tokens are asked for.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A service-account key file as Google issues them, for `client_email`,
/// whose `token_uri` is the mock's (`http://ADDR/oauth2/token`).
pub fn service_account_key(mock_addr: std::net::SocketAddr, client_email: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "mock-project",
        "private_key_id": "0123456789abcdef",
        "private_key": TEST_SERVICE_ACCOUNT_PRIVATE_KEY,
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": format!("http://{mock_addr}/oauth2/token"),
    })
    .to_string()
}

/// A workload identity federation file (`"type": "external_account"`)
/// whose subject token is read from `subject_file` and exchanged at the
/// mock's STS.
pub fn federation_file(mock_addr: std::net::SocketAddr, subject_file: &str) -> String {
    json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("http://{mock_addr}/sts/v1/token"),
        "credential_source": {"file": subject_file},
    })
    .to_string()
}

/// The token endpoints' counters and the tokens they issued.
#[derive(Debug, Default)]
pub(crate) struct OAuthState {
    /// Calls of `/oauth2/token`, `/sts/v1/token` and the metadata server,
    /// answered or not.
    token_calls: AtomicU64,
    sts_calls: AtomicU64,
    metadata_calls: AtomicU64,
    /// How many more calls (of any of the three) fail with a 503.
    failures_left: AtomicU32,
    /// Every token issued; the Vertex AI endpoints accept these.
    issued: Mutex<HashSet<String>>,
    /// The `iss` (client email) of the last valid assertion.
    last_issuer: Mutex<Option<String>>,
}

impl OAuthState {
    pub fn token_calls(&self) -> u64 {
        self.token_calls.load(Ordering::SeqCst)
    }

    pub fn sts_calls(&self) -> u64 {
        self.sts_calls.load(Ordering::SeqCst)
    }

    pub fn metadata_calls(&self) -> u64 {
        self.metadata_calls.load(Ordering::SeqCst)
    }

    pub fn fail_next(&self, calls: u32) {
        self.failures_left.store(calls, Ordering::SeqCst);
    }

    pub fn last_issuer(&self) -> Option<String> {
        self.last_issuer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets every token issued: the Vertex AI endpoints refuse them
    /// from now on, as after a revocation.
    pub fn revoke_all(&self) {
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Whether `token` is one the mock issued.
    pub fn issued(&self, token: &str) -> bool {
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(token)
    }

    /// True when this call is to fail (and counts it off).
    fn failing(&self) -> bool {
        self.failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// A new token, remembered, as the token endpoints answer it.
    fn issue(&self, expires_in: u64) -> Response {
        let n = self.token_calls() + self.sts_calls() + self.metadata_calls();
        let token = format!("ya29.minted-{n}");
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone());
        Json(json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}))
            .into_response()
    }
}

fn refuse(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn unavailable() -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "mock upstream injected failure",
    )
}

/// The members of an `application/x-www-form-urlencoded` body, enough for
/// OAuth's; `None` when it is not one.
fn form(body: &Bytes) -> Option<std::collections::HashMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut members = std::collections::HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=')?;
        members.insert(percent_decode(name)?, percent_decode(value)?);
    }
    Some(members)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `POST /oauth2/token`: a JWT bearer grant whose assertion is signed
/// RS256 by the test key, issued by a client email, for the cloud-platform
/// scope, addressed to this endpoint, and not expired.
pub(crate) async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let oauth = &shared.oauth;
    oauth.token_calls.fetch_add(1, Ordering::SeqCst);
    if oauth.failing() {
        return unavailable();
    }
    let Some(form) = form(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "not a form body",
        );
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type",
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request", "no assertion");
    };
    let claims = match verify(assertion) {
        Ok(claims) => claims,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, "invalid_grant", &message),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let number = |name: &str| claims.get(name).and_then(Value::as_u64);
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let problem = match (number("iat"), number("exp")) {
        _ if !text("iss").is_some_and(|iss| iss.contains('@')) => Some("iss is not a client email"),
        _ if !text("aud").is_some_and(|aud| aud.ends_with("/oauth2/token")) => {
            Some("aud is not this token endpoint")
        }
        _ if !text("scope").is_some_and(|s| s.split(' ').any(|s| s == CLOUD_PLATFORM)) => {
            Some("scope lacks cloud-platform")
        }
        (Some(iat), Some(exp))
            if exp > iat && exp <= iat + 3600 && exp > now && iat <= now + 300 =>
        {
            None
        }
        _ => Some("iat and exp are not a valid window of at most an hour"),
    };
    if let Some(problem) = problem {
        return refuse(StatusCode::BAD_REQUEST, "invalid_grant", problem);
    }
    *oauth
        .last_issuer
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = text("iss").map(str::to_owned);
    oauth.issue(shared.config().gemini.token_expires_in)
}

/// The claims of a compact JWS signed RS256 by the test key; the error
/// says what is wrong with it.
fn verify(jwt: &str) -> Result<serde_json::Map<String, Value>, String> {
    let mut pieces = jwt.split('.');
    let (Some(head), Some(claims), Some(signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err("the assertion is not a compact JWS".to_owned());
    };
    let decode = |piece: &str| {
        URL_SAFE_NO_PAD
            .decode(piece.trim_end_matches('='))
            .map_err(|_| "the assertion is not base64url".to_owned())
    };
    let head: Value = serde_json::from_slice(&decode(head)?).map_err(|e| e.to_string())?;
    if head["alg"] != "RS256" {
        return Err("the assertion is not RS256".to_owned());
    }
    let signed = &jwt[..jwt.len() - signature.len() - 1];
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key()?,
    )
    .verify(signed.as_bytes(), &decode(signature)?)
    .map_err(|_| "the assertion's signature does not verify".to_owned())?;
    match serde_json::from_slice(&decode(claims)?) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err("the assertion's claims are not a JSON object".to_owned()),
    }
}

/// The test key's public half (PKCS#1 DER), as ring reads it.
fn public_key() -> Result<Vec<u8>, String> {
    let base64: String = TEST_SERVICE_ACCOUNT_PRIVATE_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|e| e.to_string())?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| e.to_string())?;
    Ok(ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec())
}

/// `POST /sts/v1/token`: a token exchange of [`FEDERATION_SUBJECT_TOKEN`]
/// for an access token, as workload identity federation asks.
pub(crate) async fn sts(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let oauth = &shared.oauth;
    oauth.sts_calls.fetch_add(1, Ordering::SeqCst);
    if oauth.failing() {
        return unavailable();
    }
    let Some(form) = form(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "not a form body",
        );
    };
    let get = |name: &str| form.get(name).map(String::as_str);
    if get("grant_type") != Some("urn:ietf:params:oauth:grant-type:token-exchange") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type",
        );
    }
    if get("subject_token") != Some(FEDERATION_SUBJECT_TOKEN)
        || !get("audience").is_some_and(|a| a.starts_with("//iam.googleapis.com/"))
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The subject token or audience is not valid.",
        );
    }
    if !get("scope").is_some_and(|s| s.split(' ').any(|s| s == CLOUD_PLATFORM)) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope lacks cloud-platform",
        );
    }
    oauth.issue(shared.config().gemini.token_expires_in)
}

/// `GET /computeMetadata/v1/instance/service-accounts/default/token`: the
/// node's service account, for callers that send `Metadata-Flavor: Google`.
pub(crate) async fn metadata(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let oauth = &shared.oauth;
    oauth.metadata_calls.fetch_add(1, Ordering::SeqCst);
    if headers.get("metadata-flavor").map(|v| v.as_bytes()) != Some(b"Google") {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    if oauth.failing() {
        return unavailable();
    }
    oauth.issue(shared.config().gemini.token_expires_in)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_key_has_a_public_half_and_forged_assertions_fail() {
        assert!(public_key().unwrap().len() > 256);
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"iss":"a@b"}"#);
        let forged = format!("{head}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]));
        assert_eq!(
            verify(&forged).unwrap_err(),
            "the assertion's signature does not verify"
        );
        assert!(verify("a.b").is_err());
    }

    #[test]
    fn form_bodies_are_decoded() {
        let members = form(&Bytes::from_static(b"a=x%2By+z&b=")).unwrap();
        assert_eq!(members["a"], "x+y z");
        assert_eq!(members["b"], "");
        assert!(form(&Bytes::from_static(b"a=%zz")).is_none());
    }
}
