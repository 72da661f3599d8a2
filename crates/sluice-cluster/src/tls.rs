//! Cluster mTLS in Kong's `shared` mode: one self-signed certificate and key, generated once by
//! `sluice cluster gen-cert` and copied to every node. Each side accepts the other only if it
//! presents that very certificate (byte for byte) and proves it holds the key.
//!
//! There is no CA and no name check: the pin is the trust. SNI is still `kong_clustering`, as
//! Kong sends it, so a TLS-terminating load balancer in front of the control plane can route on
//! it.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme,
};

use crate::ClusterError;

/// The certificate's common name and the SNI a data plane sends (Kong's name for both).
pub const SERVER_NAME: &str = "kong_clustering";

/// Kong's `kong hybrid gen_cert` default lifetime.
const VALIDITY_YEARS: i32 = 3;

/// `--cluster-cert` and `--cluster-cert-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The PEM files, parsed.
pub(crate) struct LoadedTls {
    /// The chain as found in the file; the first entry is the pinned certificate.
    pub(crate) certs: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// The control plane's client verifier: the data plane must present our certificate.
struct SharedClientCert {
    expected: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The data plane's server verifier. It checks only the handshake signature; the pin itself is
/// checked right after the handshake (`data_plane.rs`), before any byte of the protocol is
/// sent. Deferring it lets the data plane's certificate reach the control plane even when the
/// two differ, so the control plane logs Kong's `data plane presented incorrect client
/// certificate` (where operators look) instead of only seeing an alert.
struct SignatureOnlyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

/// Writes a new self-signed certificate (CN and SAN `kong_clustering`, ECDSA P-384 like Kong's,
/// valid for 3 years) and its key as PEM. The key file is created with mode 0600. Refuses to
/// overwrite either file: replacing the cluster certificate on one node cuts it off from the
/// others.
pub fn gen_cert(cert_path: &Path, key_path: &Path) -> Result<(), ClusterError> {
    for path in [cert_path, key_path] {
        if path.exists() {
            return Err(ClusterError::CertExists(path.to_path_buf()));
        }
    }
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, SERVER_NAME);
    params.distinguished_name = subject;
    let (year, month, day) = civil_from_days(epoch_days());
    // Day 29–31 does not exist in every month of the end year; a few days less is harmless.
    let day = day.min(28);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year + VALIDITY_YEARS, month, day);
    let cert = params.self_signed(&key_pair)?;

    write_new_file(key_path, key_pair.serialize_pem().as_bytes(), 0o600)?;
    if let Err(error) = write_new_file(cert_path, cert.pem().as_bytes(), 0o644) {
        // Leave no key without its certificate behind.
        let _ = fs::remove_file(key_path);
        return Err(error);
    }
    Ok(())
}

/// Reads and parses `--cluster-cert` and `--cluster-cert-key`.
pub(crate) fn load(files: &TlsFiles) -> Result<LoadedTls, ClusterError> {
    let cert_pem = fs::read(&files.cert).map_err(|error| {
        ClusterError::io(
            format!("reading cluster certificate {}", files.cert.display()),
            error,
        )
    })?;
    let certs = <CertificateDer<'static> as PemObject>::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ClusterError::Pem {
            path: files.cert.clone(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ClusterError::Pem {
            path: files.cert.clone(),
            reason: "no CERTIFICATE block found".to_owned(),
        });
    }
    let key_pem = fs::read(&files.key).map_err(|error| {
        ClusterError::io(
            format!("reading cluster certificate key {}", files.key.display()),
            error,
        )
    })?;
    let key = <PrivateKeyDer<'static> as PemObject>::from_pem_slice(&key_pem).map_err(|error| {
        ClusterError::Pem {
            path: files.key.clone(),
            reason: error.to_string(),
        }
    })?;
    Ok(LoadedTls { certs, key })
}

/// The control plane's TLS config: our certificate, and a mandatory client certificate equal to
/// it.
pub(crate) fn server_config(tls: &LoadedTls) -> Result<Arc<ServerConfig>, ClusterError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(SharedClientCert {
        expected: tls.certs[0].clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.certs.clone(), tls.key.clone_key())?;
    Ok(Arc::new(config))
}

/// The data plane's TLS config: presents our certificate; the server's is pinned after the
/// handshake (see [`SignatureOnlyServerCert`]).
pub(crate) fn client_config(tls: &LoadedTls) -> Result<Arc<ClientConfig>, ClusterError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(SignatureOnlyServerCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(tls.certs.clone(), tls.key.clone_key())?;
    Ok(Arc::new(config))
}

/// The SNI a data plane sends.
pub(crate) fn server_name() -> Result<ServerName<'static>, ClusterError> {
    ServerName::try_from(SERVER_NAME)
        .map_err(|error| ClusterError::Protocol(format!("invalid SNI {SERVER_NAME}: {error}")))
}

/// (year, month, day) of the proleptic Gregorian calendar for a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`). Here so `gen-cert` needs no date crate.
pub(crate) fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // The casts cannot truncate: month is 1..=12, day 1..=31, and the year of any clock reading
    // fits an i32.
    (year as i32, month as u8, day as u8)
}

fn epoch_days() -> i64 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    i64::try_from(seconds / 86_400).unwrap_or(0)
}

/// Creates `path` (never overwriting) with `contents`, with `mode` on Unix.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), ClusterError> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        fs::create_dir_all(parent).map_err(|error| {
            ClusterError::io(format!("creating directory {}", parent.display()), error)
        })?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|error| {
        if error.kind() == io::ErrorKind::AlreadyExists {
            ClusterError::CertExists(path.to_path_buf())
        } else {
            ClusterError::io(format!("creating {}", path.display()), error)
        }
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|error| ClusterError::io(format!("writing {}", path.display()), error))
}

// === impl SharedClientCert ===

impl fmt::Debug for SharedClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedClientCert").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for SharedClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA to hint at: the certificate is self-signed and pinned.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented: &[u8] = end_entity;
        let expected: &[u8] = &self.expected;
        if presented == expected {
            Ok(ClientCertVerified::assertion())
        } else {
            // The listener recognises this error and logs Kong's message with the peer address.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// === impl SignatureOnlyServerCert ===

impl fmt::Debug for SignatureOnlyServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureOnlyServerCert")
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SignatureOnlyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Pinned after the handshake; see the type's documentation.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
