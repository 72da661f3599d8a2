//! Upstream HTTP clients with pooled keep-alive connections.
//!
//! Clients live outside the compiled snapshot and are shared by every snapshot, so a config
//! swap does not throw away warm connections. One client exists per distinct
//! (connect timeout, TLS verification) pair, because both are connector settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_plugin::Body;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

#[derive(Default)]
pub struct Clients {
    // A std Mutex: it is only held to look up or insert, never across an await, and only
    // while compiling a snapshot (not per request).
    by_settings: Mutex<HashMap<(u32, bool), HttpClient>>,
}

// === impl Clients ===

impl Clients {
    pub fn get(&self, connect_timeout_ms: u32, tls_verify: bool) -> HttpClient {
        let mut map = self
            .by_settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry((connect_timeout_ms, tls_verify))
            .or_insert_with(|| build(connect_timeout_ms, tls_verify))
            .clone()
    }
}

fn build(connect_timeout_ms: u32, tls_verify: bool) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(u64::from(connect_timeout_ms))));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let tls = tls_config(tls_verify);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build(https)
}

/// Upstream TLS. Certificates are verified against the Mozilla roots unless the service sets
/// `tls_verify: false` (Kong skips verification by default; we verify by default and say so).
fn tls_config(verify: bool) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    if verify {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    }
}

/// Accepts any upstream certificate (`tls_verify: false`); signatures are still checked so
/// the handshake itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
