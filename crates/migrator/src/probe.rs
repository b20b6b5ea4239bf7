//! `obleth-migrator probe URL`: a minimal HTTP/1.1 GET for container
//! healthchecks, so images need no curl or shell.

use std::time::Duration;

use obleth_config::settings::redact_url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a probe failed. Messages name the URL and the address dialled, with
/// any password masked (`redact_url`); I/O errors are part of the message, so
/// they are not also the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe needs a plain http:// URL, got `{url}`")]
    NotPlainHttp { url: String },
    #[error("no host in `{url}`")]
    NoHost { url: String },
    #[error("cannot connect to {address}: {error}")]
    Connect {
        address: String,
        error: std::io::Error,
    },
    #[error("cannot send to {address}: {error}")]
    Send {
        address: String,
        error: std::io::Error,
    },
    #[error("cannot read from {address}: {error}")]
    Read {
        address: String,
        error: std::io::Error,
    },
    #[error("{url} did not answer HTTP")]
    NotHttp { url: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// GETs `url` (plain `http://host:port/path`) and answers `Ok` on a 2xx status.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), ProbeError> {
    let shown = redact_url(url);
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ProbeError::NotPlainHttp { url: shown.clone() })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(ProbeError::NoHost { url: shown });
    }
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    // The address as messages show it: the authority of the masked URL.
    let shown_address = {
        let masked = redact_url(&format!("http://{address}"));
        masked.trim_start_matches("http://").to_owned()
    };
    let exchange = async {
        let mut stream =
            TcpStream::connect(&address)
                .await
                .map_err(|error| ProbeError::Connect {
                    address: shown_address.clone(),
                    error,
                })?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: obleth-probe\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| ProbeError::Send {
                address: shown_address.clone(),
                error,
            })?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|error| ProbeError::Read {
                    address: shown_address.clone(),
                    error,
                })?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| ProbeError::NotHttp { url: shown.clone() })?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(ProbeError::Status {
                url: shown.clone(),
                status,
            })
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout {
            url: shown.clone(),
            timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_are_typed_and_never_show_a_url_password() {
        let t = Duration::from_secs(5);
        let e = probe("https://u:hunter2@example.invalid/", t)
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::NotPlainHttp { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "probe needs a plain http:// URL, got `https://u:***@example.invalid/`"
        );
        let e = probe("http:///readyz", t).await.unwrap_err();
        assert_eq!(e.to_string(), "no host in `http:///readyz`");
        // A host with userinfo cannot be resolved; depending on the resolver
        // that fails at once or runs into the timeout. Either way the
        // message masks the password.
        let e = probe("http://u:hunter2@127.0.0.1:1/readyz", t)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ProbeError::Connect { .. } | ProbeError::Timeout { .. }),
            "{e:?}"
        );
        let shown = e.to_string();
        assert!(shown.contains("u:***@127.0.0.1:1"), "{shown}");
        assert!(!format!("{shown} {e:?}").contains("hunter2"), "{shown}");
        let e = probe("http://127.0.0.1:1/readyz", t).await.unwrap_err();
        assert!(matches!(e, ProbeError::Connect { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("cannot connect to 127.0.0.1:1: "),
            "{e}"
        );
    }
}
