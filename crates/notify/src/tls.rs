//! The one TLS configuration of this crate: rustls with the ring provider and
//! the operating system's certificate verifier.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls_platform_verifier::BuilderVerifierExt;

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

#[cfg(test)]
mod tests {
    #[test]
    fn client_config_builds_with_ring() {
        super::client_config().unwrap();
    }
}
