//! Vertex AI's access tokens, minted by the gateway through yup-oauth2: from
//! a service-account key, a workload identity federation file, or the
//! metadata server of the node. Each credential's tokens are cached until a
//! minute before they expire; one request at a time mints the next.

use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use http::HeaderValue;
use obleth_config::model::VertexAuth;
use secrecy::{ExposeSecret, SecretString};
use yup_oauth2::authenticator::Authenticator;
use yup_oauth2::external_account::ExternalAccountSecret;
use yup_oauth2::{AccessToken, ServiceAccountKey};

use crate::connection::Connector;

/// The scope Vertex AI's tokens are asked for.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The metadata server's host when neither `[upstream] metadata_host` nor
/// `GCE_METADATA_HOST` names another.
pub const METADATA_HOST: &str = "metadata.google.internal";

/// Longest a token request may take, whatever the attempt's own bound.
const MINT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the gateway reaches the token endpoints: the client (the egress
/// proxy when it applies; the endpoints come from the operator's files and
/// settings, so `[egress]` does not judge them) and the metadata server's
/// token URL.
#[derive(Clone)]
pub struct TokenClient {
    pub(crate) http: hyper_util::client::legacy::Client<Connector, String>,
    pub(crate) metadata_url: String,
}

impl fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("metadata_url", &self.metadata_url)
            .finish_non_exhaustive()
    }
}

/// The metadata server's token URL for `host` (`host[:port]`).
pub fn metadata_url(host: &str) -> String {
    format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token")
}

/// Where a provider's tokens come from.
enum Source {
    ServiceAccount(Box<ServiceAccountKey>),
    External(Box<ExternalAccountSecret>),
    Metadata,
}

impl Source {
    fn name(&self) -> &'static str {
        match self {
            Source::ServiceAccount(_) => "service-account",
            Source::External(_) => "workload-identity federation",
            Source::Metadata => "metadata server",
        }
    }
}

/// Why no token could be had. The message names the step, never a token,
/// a key or the endpoint's answer body.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the {from} credential could not be prepared: {message}")]
    Setup { from: &'static str, message: String },
    #[error("no access token from the {from} token endpoint within {timeout:?}")]
    Timeout {
        from: &'static str,
        timeout: Duration,
    },
    #[error("no access token from the {from} token endpoint: {message}")]
    Mint { from: &'static str, message: String },
}

/// A credential the gateway mints Vertex AI tokens with: the parsed key or
/// federation file (never printed), its authenticator, built on first use,
/// and the token in use as the header it becomes.
pub struct GoogleTokens {
    source: Source,
    authenticator: tokio::sync::OnceCell<Authenticator<Connector>>,
    current: RwLock<Option<(AccessToken, HeaderValue)>>,
    minting: tokio::sync::Mutex<()>,
    /// Set when Vertex AI refused the token in use: the next one is
    /// minted anew, not taken from the authenticator's cache.
    refused: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for GoogleTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleTokens")
            .field("source", &self.source.name())
            .finish_non_exhaustive()
    }
}

/// What a `vertex` credential turned out to be.
#[derive(Debug)]
pub enum VertexCredential {
    /// An access token, sent as it is.
    AccessToken,
    /// A credential the gateway mints tokens with.
    Minted(Box<GoogleTokens>),
}

/// Why a `vertex` credential cannot be used; names what was expected and
/// what was found, never the content.
#[derive(Debug, thiserror::Error)]
pub enum CredentialKindError {
    #[error("options.auth is `{expected}` but the credential is {found}")]
    Mismatch {
        expected: &'static str,
        found: &'static str,
    },
    #[error("the credential is JSON of an unknown `type` (service_account or external_account expected)")]
    UnknownType,
    #[error("the {kind} file cannot be read: {message}")]
    Malformed { kind: &'static str, message: String },
}

impl GoogleTokens {
    fn new(source: Source) -> Self {
        GoogleTokens {
            source,
            authenticator: tokio::sync::OnceCell::new(),
            current: RwLock::new(None),
            minting: tokio::sync::Mutex::new(()),
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Tokens from the node's metadata server (workload identity on GKE,
    /// a Compute Engine service account).
    pub fn metadata() -> Self {
        GoogleTokens::new(Source::Metadata)
    }

    /// Judges a `vertex` credential by `auth` (when set) and its content:
    /// JSON with `"type": "service_account"` is a service-account key, with
    /// `"type": "external_account"` a workload identity federation file,
    /// anything else an access token.
    pub fn classify(
        auth: Option<VertexAuth>,
        credential: &SecretString,
    ) -> Result<VertexCredential, CredentialKindError> {
        let text = credential.expose_secret().trim();
        let kind = if text.starts_with('{') {
            #[derive(serde::Deserialize)]
            struct Typed<'a> {
                #[serde(borrow, rename = "type")]
                kind: Option<std::borrow::Cow<'a, str>>,
            }
            // serde_json's errors name a position, never the input.
            match serde_json::from_str::<Typed<'_>>(text) {
                Ok(Typed { kind: Some(k) }) if k == "service_account" => VertexAuth::ServiceAccount,
                Ok(Typed { kind: Some(k) }) if k == "external_account" => {
                    VertexAuth::WorkloadIdentity
                }
                Ok(_) => return Err(CredentialKindError::UnknownType),
                Err(e) => {
                    return Err(CredentialKindError::Malformed {
                        kind: "JSON credential",
                        message: e.to_string(),
                    })
                }
            }
        } else {
            VertexAuth::AccessToken
        };
        if let Some(expected) = auth {
            if expected != kind {
                return Err(CredentialKindError::Mismatch {
                    expected: expected.as_str(),
                    found: match kind {
                        VertexAuth::AccessToken => "an access token",
                        VertexAuth::ServiceAccount => "a service-account key",
                        VertexAuth::WorkloadIdentity => "a workload identity federation file",
                    },
                });
            }
        }
        match kind {
            VertexAuth::AccessToken => Ok(VertexCredential::AccessToken),
            VertexAuth::ServiceAccount => yup_oauth2::parse_service_account_key(text)
                .map(|key| {
                    VertexCredential::Minted(Box::new(GoogleTokens::new(Source::ServiceAccount(
                        Box::new(key),
                    ))))
                })
                .map_err(|e| CredentialKindError::Malformed {
                    kind: "service-account key",
                    message: scrub(&e.to_string()),
                }),
            VertexAuth::WorkloadIdentity => serde_json::from_str::<ExternalAccountSecret>(text)
                .map(|secret| {
                    VertexCredential::Minted(Box::new(GoogleTokens::new(Source::External(
                        Box::new(secret),
                    ))))
                })
                .map_err(|e| CredentialKindError::Malformed {
                    kind: "workload identity federation",
                    message: e.to_string(),
                }),
        }
    }

    /// The `Authorization: Bearer` header for the next request: the cached
    /// token while it has more than a minute left, else a new one (one
    /// caller mints, the others wait for it), within `bound` and at most
    /// 10 s, waiting included.
    pub async fn bearer(
        &self,
        client: &TokenClient,
        bound: Duration,
    ) -> Result<HeaderValue, TokenError> {
        if let Some(header) = self.fresh() {
            return Ok(header);
        }
        // One deadline for the wait behind another caller's mint and for
        // this one's: callers never queue up one timeout each.
        let timeout = bound.min(MINT_TIMEOUT);
        match tokio::time::timeout(timeout, self.mint(client)).await {
            Ok(minted) => minted,
            Err(_) => Err(TokenError::Timeout {
                from: self.source.name(),
                timeout,
            }),
        }
    }

    /// The header of a new token, minted by one caller at a time (those
    /// waiting take the token it minted).
    async fn mint(&self, client: &TokenClient) -> Result<HeaderValue, TokenError> {
        let _one_at_a_time = self.minting.lock().await;
        if let Some(header) = self.fresh() {
            return Ok(header);
        }
        let source = self.source.name();
        let authenticator = self
            .authenticator
            .get_or_try_init(|| self.build(client))
            .await?;
        let refused = self.refused.load(std::sync::atomic::Ordering::Acquire);
        let minted = if refused {
            authenticator.force_refreshed_token(&[CLOUD_PLATFORM]).await
        } else {
            authenticator.token(&[CLOUD_PLATFORM]).await
        };
        let token = minted.map_err(|e| TokenError::Mint {
            from: source,
            message: describe(&e),
        })?;
        let Some(value) = token.token() else {
            return Err(TokenError::Mint {
                from: source,
                message: "the answer had no access_token".to_owned(),
            });
        };
        let mut header =
            HeaderValue::from_str(&format!("Bearer {value}")).map_err(|_| TokenError::Mint {
                from: source,
                message: "the access token has characters a header cannot carry".to_owned(),
            })?;
        header.set_sensitive(true);
        if refused {
            self.refused
                .store(false, std::sync::atomic::Ordering::Release);
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((token, header.clone()));
        Ok(header)
    }

    /// Drops the token in use after Vertex AI refused it (401: revoked,
    /// or its account disabled), so the next request mints a new one
    /// rather than sending it until it expires.
    pub fn forget(&self) {
        self.refused
            .store(true, std::sync::atomic::Ordering::Release);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The cached header while its token has more than a minute left.
    fn fresh(&self) -> Option<HeaderValue> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some((token, header)) if !token.is_expired() => Some(header.clone()),
            _ => None,
        }
    }

    async fn build(&self, client: &TokenClient) -> Result<Authenticator<Connector>, TokenError> {
        let source = self.source.name();
        let http = yup_oauth2::CustomHyperClientBuilder::from(client.http.clone());
        let built = match &self.source {
            Source::ServiceAccount(key) => {
                yup_oauth2::ServiceAccountAuthenticator::with_client((**key).clone(), http)
                    .build()
                    .await
            }
            Source::External(secret) => {
                yup_oauth2::ExternalAccountAuthenticator::with_client((**secret).clone(), http)
                    .build()
                    .await
            }
            Source::Metadata => {
                let opts = yup_oauth2::ApplicationDefaultCredentialsFlowOpts {
                    metadata_url: Some(client.metadata_url.clone()),
                };
                match yup_oauth2::ApplicationDefaultCredentialsAuthenticator::with_client(
                    opts, http,
                )
                .await
                {
                    yup_oauth2::authenticator::ApplicationDefaultCredentialsTypes::InstanceMetadata(b) => {
                        b.build().await
                    }
                    yup_oauth2::authenticator::ApplicationDefaultCredentialsTypes::ServiceAccount(b) => {
                        b.build().await
                    }
                }
            }
        };
        built.map_err(|e| TokenError::Setup {
            from: source,
            message: scrub(&e.to_string()),
        })
    }
}

/// A yup-oauth2 error as a log line: the kind of failure and, for an
/// OAuth refusal, its error code; never a body, which might echo a secret.
fn describe(e: &yup_oauth2::Error) -> String {
    match e {
        yup_oauth2::Error::HttpError(e) => format!("connection failed: {}", scrub(&e.to_string())),
        yup_oauth2::Error::HttpClientError(e) => {
            format!("connection failed: {}", scrub(&e.to_string()))
        }
        yup_oauth2::Error::AuthError(e) => format!("refused: {}", e.error.as_str()),
        yup_oauth2::Error::JSONError(_) => "the answer was not a token".to_owned(),
        yup_oauth2::Error::UserError(_) => "the credential was refused".to_owned(),
        yup_oauth2::Error::LowLevelError(e) => format!("I/O error: {}", e.kind()),
        yup_oauth2::Error::MissingAccessToken => "the answer had no access_token".to_owned(),
        _ => "failed".to_owned(),
    }
}

/// At most the first line of a message, and at most 200 characters.
fn scrub(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    /// A token endpoint that accepts connections and never answers: each
    /// caller, the one minting and the one waiting for it, gets a timeout
    /// within its own bound, never a wait of one bound per caller before.
    #[tokio::test]
    async fn a_token_endpoint_that_never_answers_is_a_timeout_for_every_caller() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let key = obleth_testkit::mock::service_account_key(addr, "sa@p.iam.gserviceaccount.com");
        let VertexCredential::Minted(tokens) = GoogleTokens::classify(None, &secret(&key)).unwrap()
        else {
            panic!("a key mints")
        };
        let egress = std::sync::Arc::new(obleth_config::EgressSettings {
            allow_private_networks: true,
            ..Default::default()
        });
        let client = TokenClient {
            http: crate::connection::client(&egress, None, Some(Duration::from_secs(1)), None),
            metadata_url: metadata_url("127.0.0.1:9"),
        };
        let bound = Duration::from_millis(300);
        let (first, second) =
            tokio::join!(tokens.bearer(&client, bound), tokens.bearer(&client, bound));
        for answer in [first, second] {
            let e = answer.unwrap_err();
            assert!(matches!(e, TokenError::Timeout { .. }), "{e}");
            assert!(!e.to_string().contains("PRIVATE"), "{e}");
        }
        held.abort();
    }

    #[test]
    fn a_credential_is_judged_by_its_content_and_the_auth_option() {
        assert!(matches!(
            GoogleTokens::classify(None, &secret("ya29.token")),
            Ok(VertexCredential::AccessToken)
        ));
        let e = GoogleTokens::classify(Some(VertexAuth::ServiceAccount), &secret("ya29.token"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "options.auth is `service-account` but the credential is an access token"
        );
        let e =
            GoogleTokens::classify(None, &secret(r#"{"type": "authorized_user"}"#)).unwrap_err();
        assert!(matches!(e, CredentialKindError::UnknownType), "{e}");
        // A malformed key is refused without repeating it.
        let e = GoogleTokens::classify(
            None,
            &secret(r#"{"type": "service_account", "private_key": "hunter2"}"#),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = GoogleTokens::classify(None, &secret("{not json hunter2")).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let federation = r#"{"type": "external_account", "audience": "//iam.googleapis.com/x",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token",
            "credential_source": {"file": "/var/run/token"}}"#;
        let minted = GoogleTokens::classify(None, &secret(federation)).unwrap();
        let VertexCredential::Minted(tokens) = minted else {
            panic!("{minted:?}")
        };
        assert_eq!(
            format!("{tokens:?}"),
            "GoogleTokens { source: \"workload-identity federation\", .. }"
        );
    }
}
