//! The one TLS configuration of this crate: rustls with the ring provider and
//! the operating system's certificate verifier.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls_platform_verifier::{BuilderVerifierExt, Verifier};

/// A client configuration that uses ring explicitly, so it works whether or not
/// the process installed a default rustls provider.
pub(crate) fn client_config() -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    Ok(config)
}

/// [`client_config`], also trusting `extra_roots` besides the system's
/// (none in production; the tests' CA in tests).
pub(crate) fn client_config_with_roots(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<ClientConfig, rustls::Error> {
    if extra_roots.is_empty() {
        return client_config();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier::new_with_extra_roots(extra_roots, Arc::clone(&provider))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// The HTTP client of the SMS and webhook senders: HTTPS (or plain HTTP
/// to a test server) over `tls`, HTTP/1.1, connecting within `timeout` or
/// 10 s, whichever is less. It follows no redirect (hyper's client never
/// does), so a provider cannot send a message on elsewhere.
pub(crate) type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(crate) fn https_client(tls: ClientConfig, timeout: Duration) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_config_builds_with_ring() {
        super::client_config().unwrap();
    }
}
