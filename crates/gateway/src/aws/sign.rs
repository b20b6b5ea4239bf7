//! SigV4 signing of a Bedrock request with `aws-sigv4`: over the method,
//! the URL as sent, the headers given and the exact body bytes, for the
//! service `bedrock` and the provider's region. The answer is the headers
//! to add (`authorization`, `x-amz-date`, and `x-amz-security-token` for
//! temporary credentials), the secret ones marked sensitive.

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::{HeaderName, HeaderValue};

use super::AwsKeys;

/// The SigV4 service name of Bedrock's runtime.
pub const SERVICE: &str = "bedrock";

/// Why a request could not be signed (a URL or header the signer cannot
/// read); no secret is ever part of it.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the request: {0}")]
pub struct SignError(String);

/// The headers that sign `method url` with `headers` and `body` at `time`.
pub fn signature_headers(
    keys: &AwsKeys,
    region: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(HeaderName, HeaderValue)>, SignError> {
    let identity: Identity = keys.to_credentials().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| SignError(e.to_string()))?
        .into_parts();
    let (signed, _) = instructions.into_parts();
    let mut out = Vec::with_capacity(signed.len());
    for header in signed {
        let name = HeaderName::from_static(header.name());
        let mut value =
            HeaderValue::from_str(header.value()).map_err(|e| SignError(e.to_string()))?;
        value.set_sensitive(header.sensitive() || name == http::header::AUTHORIZATION);
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(token: Option<&str>) -> AwsKeys {
        AwsKeys::from_parts(
            Some("AKIDEXAMPLE".into()),
            Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            token.map(str::to_owned),
            None,
        )
        .unwrap()
    }

    #[test]
    fn signatures_scope_the_region_and_service_and_carry_the_session_token() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let url = "https://bedrock-runtime.eu-west-1.amazonaws.com/model/anthropic.claude-v2%3A1/converse";
        let headers = [
            ("host", "bedrock-runtime.eu-west-1.amazonaws.com"),
            ("content-type", "application/json"),
        ];
        let signed = signature_headers(
            &keys(Some("TOKEN")),
            "eu-west-1",
            "POST",
            url,
            &headers,
            b"{}",
            time,
        )
        .unwrap();
        let get = |n: &str| {
            signed
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/eu-west-1/bedrock/aws4_request"
            ),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert_eq!(get("x-amz-date").unwrap(), "20231114T221320Z");
        assert_eq!(get("x-amz-security-token").unwrap(), "TOKEN");
        assert!(signed
            .iter()
            .all(|(k, v)| k != "authorization" || v.is_sensitive()));
        // The body is signed: another body, another signature.
        let other = signature_headers(
            &keys(Some("TOKEN")),
            "eu-west-1",
            "POST",
            url,
            &headers,
            b"{ }",
            time,
        )
        .unwrap();
        let other_auth = other
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.to_str().unwrap().to_owned());
        assert_ne!(Some(auth), other_auth);
        let plain = signature_headers(&keys(None), "eu-west-1", "POST", url, &headers, b"{}", time)
            .unwrap();
        assert!(plain.iter().all(|(k, _)| k != "x-amz-security-token"));
    }
}
