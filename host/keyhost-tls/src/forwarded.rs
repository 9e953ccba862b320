//! The client certificate that a trusted TLS-terminating proxy forwards in a
//! request header (KES's `tls.proxy`): read strictly, and verified as KES v0.16.1
//! verified it when client verification is on.
//!
//! A header value names **one** certificate or the request is refused. HTTP lets an
//! intermediary merge repeated fields into one line joined by commas, and a proxy
//! that appends rather than replaces writes the client's own value first: reading
//! only the first certificate of such a value would let the proxy's client choose
//! its identity. So a value holding more than one certificate, however it is joined
//! (a raw comma, an escaped one, two PEM blocks, text around the block) is refused.

use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, UnixTime};

/// Why a forwarded certificate is refused. The server answers each as KES v0.16.1
/// does (`400` with KES's message, `403` for [`Forwarded::Untrusted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forwarded {
    /// The header is missing.
    #[error("no client certificate is present")]
    Missing,
    /// The header names more than one certificate.
    #[error("too many client certificates are present")]
    TooMany,
    /// The value is not one URL-escaped PEM certificate.
    #[error("invalid client certificate")]
    Invalid,
    /// Client verification is on and the certificate does not chain to a trusted
    /// CA for the usage the era asks.
    #[error("the forwarded certificate is not issued by a trusted CA")]
    Untrusted,
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The certificate in a forwarded-certificate header value: URL-escaped PEM (Go's
/// `url.QueryUnescape`, so `+` is a space), exactly one `CERTIFICATE` block, and
/// nothing but white space around it.
///
/// # Errors
///
/// [`Forwarded::TooMany`] when the value joins several values or blocks;
/// [`Forwarded::Invalid`] for anything else that is not one certificate, the empty
/// value included (as KES v0.16.1 answers).
pub fn parse_header_value(value: &[u8]) -> Result<CertificateDer<'static>, Forwarded> {
    // A raw comma never appears in an escaped PEM certificate: it is how HTTP joins
    // repeated fields into one line.
    if value.contains(&b',') {
        return Err(Forwarded::TooMany);
    }
    let text = query_unescape(value).ok_or(Forwarded::Invalid)?;
    let text = std::str::from_utf8(&text).map_err(|_| Forwarded::Invalid)?;
    let begins = text.matches("-----BEGIN").count();
    if begins > 1 || text.matches("-----END").count() > 1 {
        return Err(Forwarded::TooMany);
    }
    let block = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let body = block
        .strip_prefix(BEGIN)
        .and_then(|rest| rest.strip_suffix(END))
        .ok_or(Forwarded::Invalid)?;
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| Forwarded::Invalid)?;
    if der.is_empty() {
        return Err(Forwarded::Invalid);
    }
    Ok(CertificateDer::from(der))
}

/// Go's `url.QueryUnescape`: `%XX` is a byte, `+` a space, and a `%` without two
/// hex digits makes the whole value invalid.
fn query_unescape(value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The extended key usage a forwarded certificate must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication, or no extended key usage at all: what KES v0.16.1
    /// asked (Go's `x509.Certificate.Verify` with default options), so that a
    /// deployment that worked with KES works alike.
    GoDefault,
    /// TLS client authentication, or no extended key usage at all.
    ClientAuth,
}

/// Verifies forwarded certificates against CA certificates: the certificate must be
/// signed by one of them directly (the header carries no intermediates, as in KES),
/// be valid now, and allow the [`Usage`].
#[derive(Debug, Clone)]
pub struct ForwardedVerifier {
    roots: Arc<rustls::RootCertStore>,
    usage: Usage,
}

impl ForwardedVerifier {
    /// A verifier trusting `roots`.
    pub fn new(roots: Arc<rustls::RootCertStore>, usage: Usage) -> Self {
        Self { roots, usage }
    }

    /// Whether `cert` is trusted.
    ///
    /// # Errors
    ///
    /// [`Forwarded::Invalid`] when it does not parse, [`Forwarded::Untrusted`] when it
    /// does not verify.
    pub fn verify(&self, cert: &CertificateDer<'_>) -> Result<(), Forwarded> {
        let leaf = webpki::EndEntityCert::try_from(cert).map_err(|_| Forwarded::Invalid)?;
        let usage = match self.usage {
            Usage::GoDefault => webpki::KeyUsage::server_auth(),
            Usage::ClientAuth => webpki::KeyUsage::client_auth(),
        };
        let algorithms = crate::provider().signature_verification_algorithms.all;
        leaf.verify_for_usage(algorithms, &self.roots.roots, &[], UnixTime::now(), usage, None, None)
            .map(|_| ())
            .map_err(|_| Forwarded::Untrusted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(pem: &str) -> String {
        pem.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    fn pem() -> String {
        let key = keyhost_policy::ApiKey::from_seed([7; 32]);
        crate::mint::client_certificate(&key).unwrap().0
    }

    #[test]
    fn one_escaped_certificate_is_read() {
        let pem = pem();
        let der = parse_header_value(escape(&pem).as_bytes()).unwrap();
        let expected = CertificateDer::from_pem_slice_helper(&pem);
        assert_eq!(der.as_ref(), expected.as_ref());
        // Go's escaping of spaces and newlines alike.
        let go = pem.replace('+', "%2B").replace(' ', "+").replace('\n', "%0A");
        assert_eq!(parse_header_value(go.as_bytes()).unwrap().as_ref(), expected.as_ref());
    }

    #[test]
    fn values_naming_two_certificates_are_refused_however_they_are_joined() {
        let (a, b) = (escape(&pem()), escape(&pem()));
        for joined in [
            format!("{a},{b}"),
            format!("{a}, {b}"),
            format!("{a}%2C{b}"),
            format!("{a}%2C%20{b}"),
            format!("{a}{b}"),
            format!("{a}%0A{b}"),
            format!("{a}%00{b}"),
            format!("{a}+{b}"),
            format!("{a},"),
            format!(",{a}"),
        ] {
            let got = parse_header_value(joined.as_bytes());
            assert_eq!(got, Err(Forwarded::TooMany), "{}", &joined[..40]);
        }
    }

    #[test]
    fn anything_around_the_block_is_invalid() {
        let a = escape(&pem());
        for value in [
            format!("junk{a}"),
            format!("{a}junk"),
            format!("{a}%2D%2D%2D%2D%2D"),
            a.replacen("%43%45%52%54", "%4B%45%59%20", 1),
            a.replacen("%41", "%G1", 1),
            a[..a.len() - 1].to_owned(),
            escape("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"),
            escape("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
        ] {
            let got = parse_header_value(value.as_bytes());
            assert!(
                matches!(got, Err(Forwarded::Invalid | Forwarded::TooMany)),
                "{value}: {got:?}"
            );
        }
        for value in ["", "  ", "hello", "%"] {
            assert_eq!(
                parse_header_value(value.as_bytes()),
                Err(Forwarded::Invalid),
                "{value:?}"
            );
        }
    }

    /// A certificate is one DER value: bytes after it, such as a second certificate
    /// in the same PEM block, make it invalid rather than ignored.
    #[test]
    fn bytes_after_a_certificate_make_it_invalid() {
        let der = CertificateDer::from_pem_slice_helper(&pem()).to_vec();
        let rule = keyhost_policy::ChainRule::V016;
        assert!(keyhost_policy::identity_of_chain([der.as_slice()], rule).is_ok());
        let other = CertificateDer::from_pem_slice_helper(&pem()).to_vec();
        for tail in [&[0u8][..], &other[..], b"junk"] {
            let padded = [der.as_slice(), tail].concat();
            assert!(
                keyhost_policy::identity_of_chain([padded.as_slice()], rule).is_err(),
                "{} bytes after it",
                tail.len()
            );
        }
    }

    /// Randomized: values made of two escaped certificates, in random escapings,
    /// with random bytes between, before and after them. A value naming both never
    /// parses, and a parse never yields anything but one whole certificate.
    #[test]
    fn no_random_joining_of_two_certificates_parses() {
        let other = keyhost_policy::ApiKey::from_seed([8; 32]);
        let (a_pem, b_pem) = (pem(), crate::mint::client_certificate(&other).unwrap().0);
        assert_ne!(a_pem, b_pem);
        let (a, b) = (
            CertificateDer::from_pem_slice_helper(&a_pem).to_vec(),
            CertificateDer::from_pem_slice_helper(&b_pem).to_vec(),
        );
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % n as u64).unwrap_or(0)
        };
        let escapings: [fn(&str) -> String; 3] = [
            escape,
            |p| p.replace('+', "%2B").replace('\n', "%0A"),
            |p| p.replace('+', "%2B").replace(' ', "+").replace('\n', "%0A"),
        ];
        let glue = [
            ",", " ", "\t", "%2C", "%0A", "%0D%0A", "%00", "+", "", ";", "%2c%20", "\"", "x",
        ];
        let piece = |next: &mut dyn FnMut(usize) -> usize| glue[next(glue.len())].repeat(next(3));
        for _ in 0..3000 {
            let (first, second) = (escapings[next(3)](&a_pem), escapings[next(3)](&b_pem));
            let (p1, p2, p3) = (piece(&mut next), piece(&mut next), piece(&mut next));
            let value = format!("{p1}{first}{p2}{second}{p3}");
            assert!(
                parse_header_value(value.as_bytes()).is_err(),
                "parsed: {}",
                &value[..value.len().min(80)]
            );
            // One of them alone parses only as itself.
            let alone = format!("{p1}{first}{p3}");
            if let Ok(der) = parse_header_value(alone.as_bytes()) {
                assert!(der.as_ref() == a.as_slice(), "another certificate came out");
                assert!(der.as_ref() != b.as_slice());
            }
        }
    }

    trait FromPem {
        fn from_pem_slice_helper(pem: &str) -> CertificateDer<'static>;
    }
    impl FromPem for CertificateDer<'static> {
        fn from_pem_slice_helper(pem: &str) -> CertificateDer<'static> {
            use rustls::pki_types::pem::PemObject;
            CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
        }
    }
}
