//! A mock OpenAI-compatible LLM provider: a real HTTP server for tests, Compose and benchmarks.
//!
//! [`MockUpstream::start`] serves `POST /v1/chat/completions`,
//! `POST /v1/completions` (both streaming with `"stream": true`),
//! `POST /v1/embeddings`, `GET /v1/models` and `GET /health` on a free local
//! port, and Anthropic's `POST /v1/messages`, strict about its key
//! ([`AnthropicMock`]), headers and turns. Completions are `tok1 tok2 ...`, as
//! many words as the config says; OpenAI streams end with a usage chunk and
//! `data: [DONE]` (unless [`MockConfig::usage`] says otherwise). A chat
//! request with a function in `tools` whose last user turn contains
//! [`TOOL_TRIGGER`] ("use a tool") is answered, whole or streamed, with a call
//! of the first function instead, on both the OpenAI and the Anthropic
//! endpoint.
//!
//! For Vertex AI's minted tokens it also serves an OAuth token endpoint
//! (`POST /oauth2/token`, checking RS256 assertions), a Security Token
//! Service (`POST /sts/v1/token`) and a metadata server, whose tokens the
//! Vertex AI endpoints accept (`oauth.rs`).
//!
//! Behaviour comes from a [`MockConfig`], replaceable at run time, and from
//! per-request headers (`x-mock-latency-ms`, `x-mock-token-delay-ms`,
//! `x-mock-tokens`, `x-mock-fail-status`), so one server can serve many test
//! cases. A model named `fail-...` always answers 500, for tests that go
//! through a gateway that does not forward those headers.

mod anthropic;
mod aws;
mod azure;
mod bedrock;
mod config;
mod embed;
mod gate;
mod gemini;
mod gemini_embed;
mod handlers;
mod oauth;
mod responses;
mod server;
mod sse;
mod state;
mod tools;
mod wire;

pub use anthropic::{AnthropicMock, ANTHROPIC_API_KEY, TOOL_TRIGGER};
pub use azure::{AzureMock, AZURE_API_KEY, AZURE_API_VERSIONS};
pub use bedrock::{
    AwsKey, BedrockMock, BEDROCK_ACCESS_KEY_ID, BEDROCK_SECRET_ACCESS_KEY,
    BEDROCK_SESSION_ACCESS_KEY_ID, BEDROCK_SESSION_SECRET_ACCESS_KEY, BEDROCK_SESSION_TOKEN,
    STS_ACCESS_KEY_ID, WEB_IDENTITY_ROLE_ARN, WEB_IDENTITY_TOKEN,
};
pub use config::{
    MockConfig, MockUsage, FAIL_STATUS_HEADER, LATENCY_HEADER, TOKENS_HEADER, TOKEN_DELAY_HEADER,
};
pub use gemini::{GeminiMock, GEMINI_API_KEY, VERTEX_ACCESS_TOKEN};
pub use oauth::{
    federation_file, service_account_key, FEDERATION_SUBJECT_TOKEN,
    TEST_SERVICE_ACCOUNT_PRIVATE_KEY,
};
pub use server::MockUpstream;
pub use state::RecordedRequest;
