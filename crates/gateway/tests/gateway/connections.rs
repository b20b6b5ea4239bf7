//! Provider connections over real TLS on loopback: a private CA trusted
//! only by the provider that names it, a client certificate for a server
//! that requires one, the egress proxy's CONNECT tunnels (and `no_proxy`),
//! and `connect_timeout_ms` against a handshake that never finishes.

use std::time::{Duration, Instant};

use obleth_gateway::settings::{GatewaySettings, ProviderConfig, ProxyUrl};
use obleth_testkit::{MockConfig, MockUpstream};

use crate::netsupport::{ConnectProxy, Pki, Silent, TlsFront};
use crate::support::*;

/// A provider at `url` whose TLS trusts the private CA.
fn private_ca_provider(name: &str, url: &str, pki: &Pki) -> ProviderConfig {
    let mut p = openai_provider(name, url);
    p.options.ca_file = Some(pki.file("ca.pem"));
    p
}

/// Embedded settings with `providers`, a route per provider named after
/// it, one attempt per request, and the PKI's directory for credentials.
fn settings(pki: &Pki, providers: Vec<ProviderConfig>) -> (GatewaySettings, String) {
    let (key, secret) = file_key(|_| {});
    let mut s = embedded_settings(vec![key]);
    s.routes = providers
        .iter()
        .map(|p| route(&p.name, &[p.name.as_str()]))
        .collect();
    s.providers = providers;
    s.routing.max_attempts = 1;
    s.egress.credential_dirs = vec![pki.credential_dir().to_path_buf()];
    (s, secret)
}

async fn start(s: GatewaySettings) -> TestGateway {
    let gw = TestGateway::start(s).await;
    gw.wait_ready().await;
    gw
}

async fn attempts(gw: &TestGateway, provider: &str, outcome: &str) -> f64 {
    metric(
        gw,
        "obleth_upstream_attempts_total",
        &[("provider", provider), ("outcome", outcome)],
    )
    .await
}

/// A 502 in OpenAI's shape that says nothing of the network or the files.
fn assert_opaque_502(answer: &Answer, pki: &Pki, hidden: &[&str]) {
    assert_eq!(answer.status, 502, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["error"]["type"], "upstream_error", "{body}");
    let text = answer.text();
    let dir = pki.credential_dir().display().to_string();
    for secret in [dir.as_str(), "127.0.0.1", "localhost", "certificate", "pem"]
        .iter()
        .chain(hidden)
    {
        assert!(!text.contains(secret), "`{secret}` in {text}");
    }
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_by_the_provider_that_names_it() {
    let pki = Pki::new();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let front = TlsFront::start(pki.server_config(false), mock.addr()).await;
    let url = front.base_url("127.0.0.1");
    std::fs::write(pki.path("garbage.pem"), "not a certificate").unwrap();
    let mut broken = openai_provider("broken", &url);
    broken.options.ca_file = Some(pki.file("garbage.pem"));
    let (s, secret) = settings(
        &pki,
        vec![
            private_ca_provider("private", &url, &pki),
            openai_provider("public", &url),
            broken,
        ],
    );
    s.validate().unwrap();
    let gw = start(s).await;

    let answer = chat(&gw, &secret, "private").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(mock.requests(), 1);
    assert_eq!(front.handshakes_ok(), 1);

    // The public roots do not know the private CA: the handshake fails and
    // the request never reaches the server.
    let port = front.addr.port().to_string();
    let answer = chat(&gw, &secret, "public").await;
    assert_opaque_502(&answer, &pki, &[&port]);
    assert_eq!(mock.requests(), 1);
    assert_eq!(attempts(&gw, "public", "error").await, 1.0);

    // A CA file that is not one is no fall back to the public roots (nor a
    // connection at all): every attempt fails.
    let handshakes = front.handshakes_ok() + front.handshakes_failed();
    let answer = chat(&gw, &secret, "broken").await;
    assert_opaque_502(&answer, &pki, &[&port, "garbage"]);
    assert_eq!(
        front.handshakes_ok() + front.handshakes_failed(),
        handshakes
    );
    assert_eq!(mock.requests(), 1);
    assert_eq!(attempts(&gw, "broken", "error").await, 1.0);

    // The provider's own client is built once and reused.
    assert_eq!(chat(&gw, &secret, "private").await.status, 200);
    assert_eq!(mock.requests(), 2);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_requiring_a_client_certificate_accepts_only_the_configured_one() {
    let pki = Pki::new();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let front = TlsFront::start(pki.server_config(true), mock.addr()).await;
    let url = front.base_url("localhost");
    let mut mtls = private_ca_provider("mtls", &url, &pki);
    mtls.options.client_cert_file = Some(pki.file("client.pem"));
    mtls.options.client_key_ref = Some(format!("file:{}", pki.file("client.key")));
    let (s, secret) = settings(
        &pki,
        vec![mtls, private_ca_provider("anonymous", &url, &pki)],
    );
    s.validate().unwrap();
    let gw = start(s).await;

    let answer = chat(&gw, &secret, "mtls").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(mock.requests(), 1);
    assert_eq!(front.handshakes_ok(), 1);

    let answer = chat(&gw, &secret, "anonymous").await;
    assert_opaque_502(&answer, &pki, &[]);
    assert_eq!(mock.requests(), 1, "a client without a certificate got in");
    assert_eq!(front.handshakes_failed(), 1);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn the_egress_proxy_tunnels_provider_connections_except_to_no_proxy_hosts() {
    let pki = Pki::new();
    let proxy = ConnectProxy::start().await;
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let front = TlsFront::start(pki.server_config(false), mock.addr()).await;
    let (mut s, secret) = settings(
        &pki,
        vec![
            private_ca_provider("tunneled", &front.base_url("127.0.0.1"), &pki),
            private_ca_provider("direct", &front.base_url("localhost"), &pki),
            openai_provider("plain", &mock.base_url()),
        ],
    );
    s.upstream.proxy = Some(ProxyUrl::new(format!(
        "http://gw:proxy-pw-secret@{}",
        proxy.addr
    )));
    s.upstream.no_proxy = vec!["localhost".to_owned()];
    s.validate().unwrap();
    let gw = start(s.clone()).await;

    let answer = chat(&gw, &secret, "tunneled").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(proxy.tunnels(), 1);
    let asked = &proxy.requests()[0];
    assert_eq!(asked.target, format!("127.0.0.1:{}", front.addr.port()));
    // `gw:proxy-pw-secret`, as Basic credentials.
    assert_eq!(
        asked.authorization.as_deref(),
        Some("Basic Z3c6cHJveHktcHctc2VjcmV0")
    );
    // TLS ran end to end, through the tunnel.
    assert_eq!(front.handshakes_ok(), 1);

    // `no_proxy` names `localhost`: straight to the server.
    let answer = chat(&gw, &secret, "direct").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(proxy.tunnels(), 1, "a no_proxy host went through the proxy");
    assert_eq!(front.handshakes_ok(), 2);

    // A plain-http provider is tunneled too, to its port.
    let answer = chat(&gw, &secret, "plain").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(proxy.tunnels(), 2);
    assert_eq!(
        proxy.requests()[1].target,
        format!("127.0.0.1:{}", mock.addr().port())
    );
    assert_eq!(mock.requests(), 3);
    gw.stop().await.unwrap();

    // The proxy (on loopback) is the operator's and not judged by the egress
    // policy; the provider's host still is, before any tunnel is asked for.
    s.egress.allow_private_networks = false;
    s.upstream.no_proxy.clear();
    let gw = start(s).await;
    let answer = chat(&gw, &secret, "tunneled").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(attempts(&gw, "tunneled", "refused").await, 1.0);
    assert_eq!(proxy.tunnels(), 2, "a refused host was tunneled");
    // A name the gateway cannot resolve behind the proxy goes through it.
    let answer = chat(&gw, &secret, "direct").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(proxy.tunnels(), 3);
    assert_eq!(
        proxy.requests()[2].target,
        format!("localhost:{}", front.addr.port())
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn connect_timeout_bounds_a_tls_handshake_that_never_finishes() {
    let pki = Pki::new();
    let silent = Silent::start().await;
    let url = format!("https://127.0.0.1:{}/v1", silent.addr.port());
    let mut slow = private_ca_provider("slow", &url, &pki);
    slow.timeout_ms = 20_000;
    slow.options.connect_timeout_ms = Some(300);
    let (s, secret) = settings(&pki, vec![slow]);
    s.validate().unwrap();
    let gw = start(s).await;

    let t0 = Instant::now();
    let answer = chat(&gw, &secret, "slow").await;
    let took = t0.elapsed();
    // The TCP connect succeeded (the listener accepted); the handshake never
    // finished, and the attempt ended long before the provider's timeout.
    assert_eq!(silent.accepted(), 1);
    assert_opaque_502(&answer, &pki, &[]);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(attempts(&gw, "slow", "timeout").await, 1.0);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn rotated_ca_and_client_certificate_files_are_used_without_a_reload() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let front = TlsFront::start(pki.server_config(true), mock.addr()).await;
    let url = front.base_url("localhost");
    // The provider's files start as another CA's and its client's.
    for name in ["ca.pem", "client.pem", "client.key"] {
        std::fs::copy(stranger.path(name), pki.path(&format!("mounted-{name}"))).unwrap();
    }
    let mut p = openai_provider("rotating", &url);
    p.options.ca_file = Some(pki.file("mounted-ca.pem"));
    p.options.client_cert_file = Some(pki.file("mounted-client.pem"));
    p.options.client_key_ref = Some(format!("file:{}", pki.file("mounted-client.key")));
    let (mut s, secret) = settings(&pki, vec![p]);
    s.cache.credential_poll_secs = 1;
    s.validate().unwrap();
    let gw = start(s).await;

    let answer = chat(&gw, &secret, "rotating").await;
    assert_opaque_502(&answer, &pki, &[]);
    assert_eq!(mock.requests(), 0);

    // Rotated as Kubernetes does it: new files renamed over the old ones.
    for name in ["ca.pem", "client.pem", "client.key"] {
        let next = pki.path(&format!("mounted-{name}.next"));
        std::fs::copy(pki.path(name), &next).unwrap();
        std::fs::rename(&next, pki.path(&format!("mounted-{name}"))).unwrap();
    }
    wait_until(
        Duration::from_secs(15),
        "the rotated CA and client certificate to be used",
        || {
            let (gw, secret) = (&gw, &secret);
            async move { chat(gw, secret, "rotating").await.status == 200 }
        },
    )
    .await;
    assert!(mock.requests() >= 1);

    // A CA file rotated into garbage: the files in use stay in use.
    std::fs::write(pki.path("mounted-ca.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let answer = chat(&gw, &secret, "rotating").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    gw.stop().await.unwrap();
}
