//! Amazon Web Services plumbing for the `bedrock` kind: credentials (a
//! provider's `credential_ref`, else the environment, else web identity
//! through STS), SigV4 request signing, and the event-stream framing of
//! Bedrock's streamed answers. The Converse translation itself is
//! [`crate::translate::bedrock`].

pub mod credentials;
pub mod frames;
pub mod sign;
pub mod sts;

pub use credentials::{AwsKeys, KeysError};
