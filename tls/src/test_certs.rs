//! A throwaway PKI for tests: a CA, certificates it signs for `localhost` and
//! `127.0.0.1` (usable by servers and clients alike), PEM files written atomically, and
//! a rustls client config that trusts the CA.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use tempfile::{tempdir, TempDir};

/// A certificate authority that lives as long as the test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

/// A certificate signed by a [`TestCa`], with its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub serial: u64,
}

impl TestCa {
    /// # Panics
    /// Key generation or signing failed.
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Write the CA certificate as PEM.
    ///
    /// # Panics
    /// The file cannot be written.
    pub fn write(&self, path: &Path) {
        write_atomically(path, &self.cert_pem);
    }

    /// A certificate for `localhost` and `127.0.0.1` named `common_name`, good for server
    /// and client authentication.
    ///
    /// # Panics
    /// Key generation or signing failed.
    pub fn issue(&self, common_name: &str) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let serial: u64 = rand_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            serial,
        }
    }

    /// A rustls client config trusting this CA, presenting `identity` if given, offering
    /// the `alpn` protocols.
    ///
    /// # Panics
    /// The certificates are unusable.
    pub fn client_config(&self, identity: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der.clone()).expect("CA as root");
        let builder = ClientConfig::builder_with_provider(crate::pem::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(leaf) => {
                use rustls_pki_types::pem::PemObject as _;
                let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
                builder
                    .with_client_auth_cert(vec![leaf.cert_der.clone()], key)
                    .expect("client certificate")
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Leaf {
    /// Write the certificate and the key as PEM, each by rename, so a watcher never
    /// reads half a file.
    ///
    /// # Panics
    /// A file cannot be written.
    pub fn write(&self, cert: &Path, key: &Path) {
        write_atomically(cert, &self.cert_pem);
        write_atomically(key, &self.key_pem);
    }
}

fn rand_serial() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    // A positive serial of 8 bytes (the top bit clear keeps the DER INTEGER positive).
    (h.finish() >> 1) | 1
}

fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write PEM");
    std::fs::rename(&tmp, path).expect("rename PEM");
}
