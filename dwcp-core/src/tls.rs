//! TLS identities and mutual-TLS configuration for the QUIC and TCP transports.
//!
//! Both sides present a certificate chain and verify the peer's against a
//! configured CA; the ALPN is `dwcp/1`. The peer's identity is the first DNS
//! name in its certificate's subject alternative names ([`peer_name`]).
//! [`DevCa`] generates a throwaway CA and certificates for demos and tests:
//! that is the only way to run without operator-provided certificates.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::RootCertStore;

/// ALPN protocol id of DWCP version 1.
pub const ALPN: &[u8] = b"dwcp/1";

/// A TLS configuration problem.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        what: String,
    },
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (for example an empty CA).
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// Certificate generation failed (development mode).
    #[error("certificate generation: {0}")]
    Generate(String),
    /// A certificate's DER could not be parsed as X.509 (to read its validity).
    #[error("certificate {index} of the chain: {what}")]
    X509 {
        /// Position in the chain, leaf = 0.
        index: usize,
        /// The parser's complaint.
        what: String,
    },
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Mutual-TLS settings of an endpoint: its identity and the CA it trusts.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// This endpoint's certificate and key.
    pub identity: Identity,
    /// CA certificates that sign acceptable peer certificates.
    pub roots: Arc<RootCertStore>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// Mutual-TLS settings presenting `identity` and trusting the CAs in `roots`.
    ///
    /// # Examples
    /// ```
    /// use dwcp_core::tls::{DevCa, TlsConfig};
    /// let ca = DevCa::new().expect("ca");
    /// let tls = TlsConfig::new(ca.issue("node-a.example").expect("cert"), ca.roots());
    /// assert!(tls.server_config().is_ok());
    /// ```
    pub fn new(identity: Identity, roots: Arc<RootCertStore>) -> Self {
        TlsConfig { identity, roots }
    }

    /// Loads a certificate chain, a private key and a CA bundle from PEM files.
    ///
    /// # Errors
    /// A file is missing, unreadable or holds no certificate or key.
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let pem_err = |p: &Path, what: String| TlsError::Pem {
            path: p.display().to_string(),
            what,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_err(cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_err(cert, "no certificate found".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e.to_string()))?;
        let mut roots = RootCertStore::empty();
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| pem_err(ca, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(ca, e.to_string()))?;
        for c in cas {
            roots
                .add(c)
                .map_err(|e| pem_err(ca, format!("bad CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(pem_err(ca, "no CA certificate found".into()));
        }
        Ok(TlsConfig {
            identity: Identity {
                chain,
                key: key_der,
            },
            roots: Arc::new(roots),
        })
    }

    /// A rustls server configuration requiring a client certificate signed by the CA.
    ///
    /// # Errors
    /// The identity or CA is unusable.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.identity.chain.clone(), self.identity.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.max_early_data_size = 0;
        Ok(cfg)
    }

    /// A rustls client configuration presenting this identity and trusting the CA.
    ///
    /// # Errors
    /// The identity or CA is unusable.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.identity.chain.clone(), self.identity.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }
}

/// The end of a certificate's validity (`notAfter`), in seconds since the
/// Unix epoch (negative before 1970).
///
/// # Errors
/// [`TlsError::X509`] (with `index` 0) if `cert` is not a well-formed X.509
/// certificate.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<i64, TlsError> {
    use x509_parser::prelude::FromDer;
    let (_, parsed) =
        x509_parser::certificate::X509Certificate::from_der(cert.as_ref()).map_err(|e| {
            TlsError::X509 {
                index: 0,
                what: e.to_string(),
            }
        })?;
    Ok(parsed.validity().not_after.timestamp())
}

impl Identity {
    /// When the chain this identity presents stops being valid: the earliest
    /// `notAfter` of its certificates (the leaf and any intermediates), in
    /// seconds since the Unix epoch.
    ///
    /// # Errors
    /// [`TlsError::X509`] naming the first certificate that does not parse,
    /// or an empty chain (index 0).
    ///
    /// # Examples
    /// ```
    /// use dwcp_core::tls::DevCa;
    /// let ca = DevCa::new().expect("ca");
    /// let expired = ca.issue_expired("old.example").expect("cert");
    /// assert_eq!(expired.not_after().expect("parses"), 1_609_459_200); // 2021-01-01
    /// ```
    pub fn not_after(&self) -> Result<i64, TlsError> {
        let mut earliest: Option<i64> = None;
        for (index, cert) in self.chain.iter().enumerate() {
            let t = not_after(cert).map_err(|e| match e {
                TlsError::X509 { what, .. } => TlsError::X509 { index, what },
                other => other,
            })?;
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
        earliest.ok_or_else(|| TlsError::X509 {
            index: 0,
            what: "empty certificate chain".into(),
        })
    }
}

/// The peer's identity: the first DNS name in its leaf certificate's SAN.
pub fn peer_name(chain: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = chain.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    cert.valid_dns_names().next().map(str::to_string)
}

/// How long development certificates are valid.
const DEV_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Validity from an hour ago (clock skew between test processes) for `validity`.
fn set_validity(params: &mut rcgen::CertificateParams, validity: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    let secs = i64::try_from(validity.as_secs()).unwrap_or(i64::MAX);
    params.not_after = now.saturating_add(time::Duration::seconds(secs));
}

/// A throwaway certificate authority for development mode, demos and tests.
/// Nothing it issues should be trusted outside the process that made it.
pub struct DevCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// Generates a new CA.
    ///
    /// # Errors
    /// Key generation failed.
    pub fn new() -> Result<Self, TlsError> {
        let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let key = rcgen::KeyPair::generate().map_err(gen)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "DWCP development CA");
        let cert = params.self_signed(&key).map_err(gen)?;
        Ok(DevCa { cert, key })
    }

    /// The CA certificate.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A root store trusting only this CA.
    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        // A certificate we just generated always parses.
        let _ = roots.add(self.cert_der());
        Arc::new(roots)
    }

    /// Issues a certificate for `name` valid from an hour ago for a year.
    ///
    /// # Errors
    /// Generation failed.
    pub fn issue(&self, name: &str) -> Result<Identity, TlsError> {
        self.issue_with(name, false)
    }

    /// Issues a certificate for `name` that expired in 2021 (for tests).
    ///
    /// # Errors
    /// Generation failed.
    pub fn issue_expired(&self, name: &str) -> Result<Identity, TlsError> {
        self.issue_with(name, true)
    }

    fn issue_with(&self, name: &str, expired: bool) -> Result<Identity, TlsError> {
        let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let key = rcgen::KeyPair::generate().map_err(gen)?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(gen)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        } else {
            set_validity(&mut params, DEV_VALIDITY);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).map_err(gen)?;
        Ok(Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// Writes `ca.pem`, `NAME.pem` and `NAME.key` for each of `names` into
    /// `dir`, so separate processes can share a development CA. The
    /// certificates are valid from an hour ago for a year.
    ///
    /// # Errors
    /// Generation failed or the files could not be written.
    pub fn write_pem_files(&self, dir: &Path, names: &[&str]) -> Result<(), TlsError> {
        self.write_pem_files_valid_for(dir, names, DEV_VALIDITY)
    }

    /// As [`DevCa::write_pem_files`], with leaves valid from an hour ago
    /// for `validity` (whole seconds).
    ///
    /// # Errors
    /// Generation failed or the files could not be written.
    pub fn write_pem_files_valid_for(
        &self,
        dir: &Path,
        names: &[&str],
        validity: Duration,
    ) -> Result<(), TlsError> {
        let io = |p: &Path, e: std::io::Error| TlsError::Pem {
            path: p.display().to_string(),
            what: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, self.cert_pem()).map_err(|e| io(&ca, e))?;
        let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
        for name in names {
            let key = rcgen::KeyPair::generate().map_err(gen)?;
            let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(gen)?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, *name);
            set_validity(&mut params, validity);
            let cert = params.signed_by(&key, &self.cert, &self.key).map_err(gen)?;
            let cp = dir.join(format!("{name}.pem"));
            std::fs::write(&cp, cert.pem()).map_err(|e| io(&cp, e))?;
            let kp = dir.join(format!("{name}.key"));
            std::fs::write(&kp, key.serialize_pem()).map_err(|e| io(&kp, e))?;
        }
        Ok(())
    }

    /// A complete mutual-TLS configuration for `name`, trusting this CA.
    ///
    /// # Errors
    /// Generation failed.
    pub fn config_for(&self, name: &str) -> Result<TlsConfig, TlsError> {
        Ok(TlsConfig {
            identity: self.issue(name)?,
            roots: self.roots(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    #[test]
    fn not_after_reads_the_validity_of_issued_and_expired_certificates() {
        let ca = DevCa::new().expect("ca");
        let year = DEV_VALIDITY.as_secs() as i64;
        let t = ca
            .issue("a.example")
            .expect("cert")
            .not_after()
            .expect("parses");
        assert!((t - (unix_now() + year)).abs() < 60, "{t}");
        let old = ca.issue_expired("b.example").expect("cert");
        assert_eq!(old.not_after().expect("parses"), 1_609_459_200);
    }

    #[test]
    fn not_after_of_a_chain_is_its_earliest_and_garbage_is_an_error() {
        let ca = DevCa::new().expect("ca");
        let mut id = ca.issue("a.example").expect("cert");
        let old = ca.issue_expired("b.example").expect("cert");
        id.chain.push(old.chain[0].clone());
        assert_eq!(id.not_after().expect("parses"), 1_609_459_200);
        id.chain
            .push(CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]));
        assert!(matches!(
            id.not_after(),
            Err(TlsError::X509 { index: 2, .. })
        ));
        id.chain.clear();
        assert!(matches!(
            id.not_after(),
            Err(TlsError::X509 { index: 0, .. })
        ));
    }

    #[test]
    fn pem_files_carry_the_requested_validity() {
        let dir = std::env::temp_dir().join(format!("dwcp-tls-validity-{}", std::process::id()));
        let ca = DevCa::new().expect("ca");
        ca.write_pem_files_valid_for(&dir, &["n"], Duration::from_secs(86_400))
            .expect("write");
        let tls =
            TlsConfig::from_pem_files(&dir.join("n.pem"), &dir.join("n.key"), &dir.join("ca.pem"))
                .expect("load");
        let t = tls.identity.not_after().expect("parses");
        assert!((t - (unix_now() + 86_400)).abs() < 60, "{t}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
