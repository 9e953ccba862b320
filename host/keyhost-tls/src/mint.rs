//! Certificates made on the spot: the throw-away credentials of `keyhost server
//! --dev` and of tests (a self-signed server certificate and an admin API key with
//! its client certificate), and the identity certificates of `keyhost identity new`.

use keyhost_policy::ApiKey;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

/// Credentials of a throw-away deployment.
#[derive(Debug)]
pub struct DevCredentials {
    /// The server certificate (PEM); clients trust it as their CA.
    pub server_cert_pem: String,
    /// The server certificate (DER).
    pub server_cert_der: CertificateDer<'static>,
    /// The server's private key (PKCS#8 DER).
    pub server_key_der: Zeroizing<Vec<u8>>,
    /// The server's private key (PKCS#8 PEM).
    pub server_key_pem: Zeroizing<String>,
    /// The admin's API key.
    pub admin: ApiKey,
    /// The admin's client certificate, derived from the API key (PEM).
    pub admin_cert_pem: String,
    /// The admin's private key, derived from the API key (PKCS#8 PEM).
    pub admin_key_pem: Zeroizing<String>,
}

/// Why credentials could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot create certificates: {0}")]
pub struct DevError(#[from] rcgen::Error);

/// The PKCS#8 DER of the Ed25519 key an API key stands for.
pub fn api_key_pkcs8(key: &ApiKey) -> Zeroizing<Vec<u8>> {
    let mut der = Zeroizing::new(vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ]);
    der.extend_from_slice(key.expose_seed());
    der
}

/// A client certificate for an API key, made as KES clients make it: self-signed
/// Ed25519, CN = the identity, client authentication, 90 days.
pub fn client_certificate(key: &ApiKey) -> Result<(String, Zeroizing<String>), DevError> {
    let pkcs8 = api_key_pkcs8(key);
    let pair = KeyPair::try_from(pkcs8.as_slice())?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, key.identity().as_str());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(90);
    let cert = params.self_signed(&pair)?;
    Ok((cert.pem(), Zeroizing::new(pair.serialize_pem())))
}

/// What [`identity_certificate`] puts in a certificate.
#[derive(Debug, Clone, Default)]
pub struct CertificateRequest {
    /// The subject's common name.
    pub subject: String,
    /// Subject alternative names: IP addresses.
    pub ips: Vec<std::net::IpAddr>,
    /// Subject alternative names: DNS names.
    pub dns: Vec<String>,
    /// How long the certificate is valid.
    pub validity: std::time::Duration,
}

/// A self-signed certificate for the Ed25519 key an API key stands for, usable by
/// clients and servers alike (client and server authentication), as
/// `kes identity new --key --cert` writes it. Its identity is the API key's.
pub fn identity_certificate(
    key: &ApiKey,
    request: &CertificateRequest,
) -> Result<(String, Zeroizing<String>), DevError> {
    let pkcs8 = api_key_pkcs8(key);
    let pair = KeyPair::try_from(pkcs8.as_slice())?;
    self_signed(&pair, request)
}

/// Like [`identity_certificate`], for a new ECDSA P-256 key (for peers that cannot
/// use Ed25519). Returns the certificate and the private key (PEM).
pub fn ecdsa_identity_certificate(request: &CertificateRequest) -> Result<(String, Zeroizing<String>), DevError> {
    let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    self_signed(&pair, request)
}

/// Like [`identity_certificate`], for an RSA key given as PKCS#8 DER (keyhost's
/// crypto library cannot generate RSA keys; the caller does).
pub fn rsa_identity_certificate(
    pkcs8_der: &[u8],
    request: &CertificateRequest,
) -> Result<(String, Zeroizing<String>), DevError> {
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8_der);
    let pair = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)?;
    self_signed(&pair, request)
}

fn self_signed(pair: &KeyPair, request: &CertificateRequest) -> Result<(String, Zeroizing<String>), DevError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, request.subject.as_str());
    for ip in &request.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    for name in &request.dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.clone().try_into()?));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::try_from(request.validity).unwrap_or(time::Duration::days(30));
    let cert = params.self_signed(pair)?;
    Ok((cert.pem(), Zeroizing::new(pair.serialize_pem())))
}

impl DevCredentials {
    /// New credentials; the server certificate names `hosts` (DNS names or IPs).
    pub fn generate(hosts: &[String]) -> Result<Self, DevError> {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "keyhost dev server");
        for host in hosts {
            params.subject_alt_names.push(match host.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.clone().try_into()?),
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(90);
        let cert = params.self_signed(&pair)?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&keyhost_crypto::random_key()[..]);
        let admin = ApiKey::from_seed(seed);
        let (admin_cert_pem, admin_key_pem) = client_certificate(&admin)?;
        Ok(Self {
            server_cert_pem: cert.pem(),
            server_cert_der: cert.der().clone(),
            server_key_der: Zeroizing::new(pair.serialize_der()),
            server_key_pem: Zeroizing::new(pair.serialize_pem()),
            admin,
            admin_cert_pem,
            admin_key_pem,
        })
    }

    /// A TLS server configuration with these credentials.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, rustls::Error> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.to_vec()));
        crate::server_config(vec![self.server_cert_der.clone()], key, true)
    }
}
