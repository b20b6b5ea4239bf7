//! The AWS side of the Bedrock mock: SigV4 verification (the signature is
//! computed again with `aws-sigv4` from the request as received and the
//! known credentials), Bedrock's error shape, event-stream frames
//! (written with `aws-smithy-eventstream`), and a minimal STS
//! (`AssumeRoleWithWebIdentity`) that checks the web identity token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::event_stream::{Header, HeaderValue as FrameValue, Message};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::bedrock::{AwsKey, BedrockMock};
use super::state::Shared;

/// Bedrock's error answer: `{"message"}` with its type in
/// `x-amzn-errortype`.
pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({"message": message}))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )) {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

/// The answer to a request the config or a header told to fail, in
/// Bedrock's shape.
pub(crate) fn injected(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status.as_u16() {
        429 => "ThrottlingException",
        400 => "ValidationException",
        403 => "AccessDeniedException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    };
    let message = format!(
        "mock upstream injected failure with status {}",
        status.as_u16()
    );
    let mut response = error(status, kind, &message);
    response
        .headers_mut()
        .insert("x-mock-injected", HeaderValue::from_static("true"));
    response
}

fn forbidden(kind: &str, message: &str) -> Response {
    error(StatusCode::FORBIDDEN, kind, message)
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=')?;
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed = Some(value),
            "Signature" => signature = Some(value),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let (access_key_id, date, region, service, terminal) = (
        scope.next()?,
        scope.next()?,
        scope.next()?,
        scope.next()?,
        scope.next()?,
    );
    if terminal != "aws4_request" || scope.next().is_some() {
        return None;
    }
    Some(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    })
}

/// Checks a Bedrock request's SigV4 signature as AWS does: a known access
/// key, the mock's region and the service `bedrock` in the scope, the
/// session token the key was issued with (and none for a long-term key),
/// `host` and `x-amz-date` signed, and the signature itself over the
/// method, path, signed headers and body. A refusal is the 403 AWS
/// answers.
// The refusal is the answer itself, returned once per request: its size
// costs nothing worth a box.
#[allow(clippy::result_large_err)]
pub(crate) fn verify(
    config: &BedrockMock,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Response> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(forbidden(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let Some(auth) = parse_authorization(value) else {
        return Err(forbidden(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.",
        ));
    };
    let Some(key) = config.key(auth.access_key_id) else {
        return Err(forbidden(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    if auth.service != "bedrock" || auth.region != config.region {
        return Err(forbidden(
            "InvalidSignatureException",
            &format!(
                "Credential should be scoped to a valid region and service: expected {}/bedrock, got {}/{}.",
                config.region, auth.region, auth.service
            ),
        ));
    }
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    if token != key.session_token.as_deref() {
        return Err(forbidden(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    for needed in ["host", "x-amz-date"] {
        if !auth.signed_headers.contains(&needed) {
            return Err(forbidden(
                "InvalidSignatureException",
                &format!("'{needed}' must be a signed header."),
            ));
        }
    }
    let Some(time) = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_amz_date)
        .filter(|(_, day)| *day == auth.date)
        .map(|(time, _)| time)
    else {
        return Err(forbidden(
            "InvalidSignatureException",
            "x-amz-date is missing, malformed or not the credential scope's date.",
        ));
    };
    let expected = signature(key, &config.region, method, uri, headers, &auth, body, time)
        .ok_or_else(|| {
            forbidden(
                "InvalidSignatureException",
                "The request could not be read for its signature.",
            )
        })?;
    if expected != auth.signature {
        return Err(forbidden(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        ));
    }
    Ok(())
}

/// `20231114T221320Z` as a time and its day (`20231114`).
fn parse_amz_date(value: &str) -> Option<(SystemTime, &str)> {
    let parsed = chrono::NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%SZ").ok()?;
    let secs = u64::try_from(parsed.and_utc().timestamp()).ok()?;
    Some((
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        value.get(..8)?,
    ))
}

/// The signature the request should carry, computed again by `aws-sigv4`
/// from the signed headers as received (the signer adds `x-amz-date` and
/// the session token itself).
#[allow(clippy::too_many_arguments)]
fn signature(
    key: &AwsKey,
    region: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    auth: &Authorization<'_>,
    body: &[u8],
    time: SystemTime,
) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let url = format!(
        "http://{host}{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut signed = Vec::new();
    for name in &auth.signed_headers {
        if matches!(*name, "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        let value = headers.get(*name)?.to_str().ok()?;
        signed.push((*name, value));
    }
    let identity: Identity = aws_credential_types::Credentials::new(
        key.access_key_id.clone(),
        key.secret_access_key.clone(),
        key.session_token.clone(),
        None,
        "mock",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .ok()?
        .into();
    let request = SignableRequest::new(
        method.as_str(),
        url,
        signed.into_iter(),
        SignableBody::Bytes(body),
    )
    .ok()?;
    let (_, signature) = sign(request, &params).ok()?.into_parts();
    Some(signature)
}

/// One event-stream frame of an event.
pub(crate) fn event_frame(event_type: &str, payload: &serde_json::Value) -> Bytes {
    frame(
        vec![
            (":message-type", "event"),
            (":event-type", event_type),
            (":content-type", "application/json"),
        ],
        payload.to_string(),
    )
}

/// One event-stream frame of an exception (`throttlingException` ...).
pub(crate) fn exception_frame(exception_type: &str, message: &str) -> Bytes {
    frame(
        vec![
            (":message-type", "exception"),
            (":exception-type", exception_type),
            (":content-type", "application/json"),
        ],
        json!({"message": message}).to_string(),
    )
}

fn frame(headers: Vec<(&str, &str)>, payload: String) -> Bytes {
    let mut message = Message::new(Bytes::from(payload));
    for (name, value) in headers {
        message = message.add_header(Header::new(
            name.to_owned(),
            FrameValue::String(value.to_owned().into()),
        ));
    }
    let mut out = Vec::new();
    // Writing to a Vec fails only for headers or payloads past the
    // format's limits, which the mock never makes.
    if write_message_to(&message, &mut out).is_err() {
        return Bytes::new();
    }
    Bytes::from(out)
}

/// STS's XML error.
fn sts_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>mock</RequestId></ErrorResponse>"
    );
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// `POST /sts/`: `AssumeRoleWithWebIdentity` for the configured role and
/// web identity token, answering the configured temporary credentials,
/// valid for [`BedrockMock::sts_lifetime_secs`].
pub(crate) async fn sts(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared.count_sts();
    let config = shared.config().bedrock;
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("Action") != Some("AssumeRoleWithWebIdentity")
        || field("Version") != Some("2011-06-15")
    {
        return sts_error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "Could not find operation for this version.",
        );
    }
    if field("RoleSessionName").is_none_or(str::is_empty) {
        return sts_error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "RoleSessionName is required.",
        );
    }
    if field("RoleArn") != Some(config.role_arn.as_str()) {
        return sts_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        );
    }
    if field("WebIdentityToken") != Some(config.web_identity_token.as_str()) {
        return sts_error(
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "Couldn't retrieve verification key from your identity provider.",
        );
    }
    let key = &config.sts_key;
    let expires =
        chrono::Utc::now() + chrono::Duration::seconds(i64::from(config.sts_lifetime_secs));
    let body = format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials><Provider>mock</Provider></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>mock</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>",
        key.access_key_id,
        key.secret_access_key,
        key.session_token.as_deref().unwrap_or(""),
        expires.format("%Y-%m-%dT%H:%M:%SZ"),
    );
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}
