//! How the mock upstream behaves: the server-wide [`MockConfig`] and the per-request plan.

use std::time::Duration;

use axum::http::HeaderMap;

use super::anthropic::AnthropicMock;

/// Per-request override of [`MockConfig::latency`], in milliseconds.
pub const LATENCY_HEADER: &str = "x-mock-latency-ms";
/// Per-request override of [`MockConfig::token_delay`], in milliseconds.
pub const TOKEN_DELAY_HEADER: &str = "x-mock-token-delay-ms";
/// Per-request override of [`MockConfig::completion_tokens`].
pub const TOKENS_HEADER: &str = "x-mock-tokens";
/// Answers this one request with the given status (400 to 599) and an OpenAI error body.
pub const FAIL_STATUS_HEADER: &str = "x-mock-fail-status";

/// The behaviour of a [`MockUpstream`](super::MockUpstream).
///
/// A failure answers with the status and OpenAI's error body, after `latency`.
/// When several failure settings apply, the first of these wins: the
/// `x-mock-fail-status` header, `fail_first`, `fail_status`, `fail_rate`, and
/// last a request body whose `model` starts with `fail-` (always 500).
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// Wait before the response headers are sent.
    pub latency: Duration,
    /// Wait before each content chunk of a streamed completion.
    pub token_delay: Duration,
    /// How many tokens (words, and chunks when streaming) a completion has.
    pub completion_tokens: u32,
    /// Answer requests with this status. With `fail_first` at 0 every request
    /// fails; otherwise only the first `fail_first` do.
    pub fail_status: Option<u16>,
    /// Answer the first N requests after start or [`set_config`] with
    /// `fail_status` (500 when that is `None`), then succeed.
    ///
    /// [`set_config`]: super::MockUpstream::set_config
    pub fail_first: u32,
    /// Fraction of requests answered 500, spread evenly by arrival order so
    /// that a run of benchmarks sees the same failures each time.
    pub fail_rate: f64,
    /// Sent as `retry-after` (whole seconds, rounded up) on every injected
    /// failure, as a rate-limited or overloaded provider does.
    pub retry_after: Option<Duration>,
    /// When completions report their token usage.
    pub usage: MockUsage,
    /// The key and cache count of `POST /v1/messages`.
    pub anthropic: AnthropicMock,
    /// The key, token and deployments of the Azure OpenAI endpoints.
    pub azure: super::AzureMock,
    /// The keys, token, project and models of the Gemini and Vertex AI
    /// endpoints.
    pub gemini: super::GeminiMock,
    /// The region, credentials, models and STS of the Bedrock endpoints.
    pub bedrock: super::BedrockMock,
}

/// When the mock reports token usage in completions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MockUsage {
    /// Every answer: a stream always ends with a usage chunk.
    #[default]
    Always,
    /// As OpenAI does: a non-streamed answer always, a stream only when the
    /// request sets `stream_options.include_usage: true`, and then every
    /// other chunk carries `"usage": null`.
    WhenAsked,
    /// Never: no usage chunk, no `usage` in an answer, as an upstream that
    /// ignores the option or counts nothing.
    Never,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Duration::ZERO,
            token_delay: Duration::ZERO,
            completion_tokens: 16,
            fail_status: None,
            fail_first: 0,
            fail_rate: 0.0,
            retry_after: None,
            usage: MockUsage::Always,
            anthropic: AnthropicMock::default(),
            azure: super::AzureMock::default(),
            gemini: super::GeminiMock::default(),
            bedrock: super::BedrockMock::default(),
        }
    }
}

/// What one request gets once the headers have overridden the config.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub latency: Duration,
    pub token_delay: Duration,
    pub completion_tokens: u32,
    /// A status forced by the `x-mock-fail-status` header.
    pub fail_status: Option<u16>,
    pub usage: MockUsage,
}

impl Plan {
    /// Applies the `x-mock-*` headers to `config`. A header that does not
    /// parse is an error naming it, so a typo in a test fails loudly.
    pub fn new(config: &MockConfig, headers: &HeaderMap) -> Result<Plan, String> {
        let fail_status = match header_number(headers, FAIL_STATUS_HEADER)? {
            Some(status) if (400..=599).contains(&status) => Some(status as u16),
            Some(status) => {
                return Err(format!(
                    "header {FAIL_STATUS_HEADER} must be between 400 and 599, got {status}"
                ))
            }
            None => None,
        };
        let tokens = header_number(headers, TOKENS_HEADER)?;
        Ok(Plan {
            latency: header_number(headers, LATENCY_HEADER)?
                .map_or(config.latency, Duration::from_millis),
            token_delay: header_number(headers, TOKEN_DELAY_HEADER)?
                .map_or(config.token_delay, Duration::from_millis),
            completion_tokens: match tokens {
                Some(n) => {
                    u32::try_from(n).map_err(|_| format!("header {TOKENS_HEADER} is too large"))?
                }
                None => config.completion_tokens,
            },
            fail_status,
            usage: config.usage,
        })
    }
}

fn header_number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| format!("header {name} must be a non-negative integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn headers_override_the_config() {
        let plan = Plan::new(
            &MockConfig::default(),
            &headers(&[
                (LATENCY_HEADER, "5"),
                (TOKEN_DELAY_HEADER, "7"),
                (TOKENS_HEADER, "3"),
                (FAIL_STATUS_HEADER, "503"),
            ]),
        )
        .unwrap();
        assert_eq!(plan.latency, Duration::from_millis(5));
        assert_eq!(plan.token_delay, Duration::from_millis(7));
        assert_eq!(plan.completion_tokens, 3);
        assert_eq!(plan.fail_status, Some(503));
    }

    #[test]
    fn bad_headers_are_errors_naming_the_header() {
        for (name, value) in [
            (TOKENS_HEADER, "many"),
            (LATENCY_HEADER, "-1"),
            (FAIL_STATUS_HEADER, "200"),
        ] {
            let err = Plan::new(&MockConfig::default(), &headers(&[(name, value)])).unwrap_err();
            assert!(err.contains(name), "{err}");
        }
    }
}
