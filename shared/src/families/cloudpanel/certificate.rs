//! `cloudpanel.certificate.install`: a site's TLS certificate, from Let's
//! Encrypt (`clpctl lets-encrypt:install:certificate`) or uploaded (a
//! certificate, its private key and an optional chain, which the worker
//! writes to 0600 files for `clpctl site:install:certificate`).
//!
//! Every PEM input is parsed here (by rustls' own PEM reader): the
//! certificate and the chain must be `CERTIFICATE` sections only, each
//! decoding to a DER sequence, and must not hold a private key (they are
//! stored and shown as given); the key must be one unencrypted PKCS#8,
//! PKCS#1 or SEC1 private key and nothing else. The key is a secret field:
//! stored apart, shown as `"***"`, never printed by `Debug`, never on an
//! argument vector, and never repeated in a refusal.

use rustls_pki_types::pem::{PemObject, SectionKind};
use serde::{Deserialize, Serialize};

use crate::names::{Domain, NameError};

/// The longest certificate (or chain) and key text taken.
pub const MAX_CERTIFICATE_LEN: usize = 64 * 1024;
pub const MAX_PRIVATE_KEY_LEN: usize = 16 * 1024;
/// The most certificates a chain may hold, and the most extra names.
pub const MAX_CHAIN: usize = 8;
pub const MAX_SUBJECT_ALTERNATIVE_NAMES: usize = 100;

/// The PEM sections of `text`, or why it is not PEM; `what` names the field.
fn sections(what: &'static str, text: &str) -> Result<Vec<(SectionKind, Vec<u8>)>, NameError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NameError::new(what, "(PEM text)", format!("is not valid PEM: {e}")))
}

/// Certificates only: `count` of them, each a DER sequence, and no key
/// anywhere in the text.
fn check_certificates(
    what: &'static str,
    text: &str,
    count: std::ops::RangeInclusive<usize>,
) -> Result<(), NameError> {
    let refuse = |reason: String| NameError::new(what, "(PEM text)", reason);
    if text.len() > MAX_CERTIFICATE_LEN {
        return Err(refuse(format!(
            "must be at most {MAX_CERTIFICATE_LEN} bytes"
        )));
    }
    if text.contains("PRIVATE KEY") {
        return Err(refuse(
            "holds a private key: give it as private_key, which is kept secret".into(),
        ));
    }
    let found = sections(what, text)?;
    if let Some((kind, _)) = found
        .iter()
        .find(|(kind, _)| *kind != SectionKind::Certificate)
    {
        return Err(refuse(format!("must hold only certificates, not {kind:?}")));
    }
    if !count.contains(&found.len()) {
        return Err(refuse(format!(
            "must hold {} to {} PEM certificates (-----BEGIN CERTIFICATE-----), not {}",
            count.start(),
            count.end(),
            found.len()
        )));
    }
    if found.iter().any(|(_, der)| der.first() != Some(&0x30)) {
        return Err(refuse(
            "a certificate's content is not a DER sequence".into(),
        ));
    }
    Ok(())
}

string_value!(
    /// One PEM certificate (the site's own).
    Certificate
);

impl Certificate {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_certificates("certificate", value, 1..=1)?;
        Ok(Self(value.to_owned()))
    }
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certificate({} bytes)", self.0.len())
    }
}

string_value!(
    /// The intermediate certificates, in PEM, one after another.
    CertificateChain
);

impl CertificateChain {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_certificates("certificate chain", value, 1..=MAX_CHAIN)?;
        Ok(Self(value.to_owned()))
    }
}

impl std::fmt::Debug for CertificateChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertificateChain({} bytes)", self.0.len())
    }
}

string_value!(
    /// One unencrypted private key in PEM (PKCS#8 `PRIVATE KEY`, PKCS#1
    /// `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`). Its `Debug` never shows
    /// it and no refusal repeats it.
    PrivateKey
);

impl PrivateKey {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: String| NameError::new("private key", "***", reason);
        if value.len() > MAX_PRIVATE_KEY_LEN {
            return Err(refuse(format!(
                "must be at most {MAX_PRIVATE_KEY_LEN} bytes"
            )));
        }
        let found = <(SectionKind, Vec<u8>)>::pem_slice_iter(value.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| refuse("is not valid PEM".into()))?;
        let is_key = |kind: &SectionKind| {
            matches!(
                kind,
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
            )
        };
        match found.as_slice() {
            [(kind, der)] if is_key(kind) && der.first() == Some(&0x30) => {
                Ok(Self(value.to_owned()))
            }
            _ => Err(refuse(
                "must be one unencrypted PEM private key (-----BEGIN PRIVATE KEY-----, \
                 RSA PRIVATE KEY or EC PRIVATE KEY) and nothing else"
                    .into(),
            )),
        }
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(***)")
    }
}

/// Where the certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateSource {
    /// Issued by Let's Encrypt through clpctl (the domain must resolve to
    /// the server).
    LetsEncrypt,
    /// The certificate, key and chain given in the request.
    Upload,
}

impl CertificateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateSource::LetsEncrypt => "lets-encrypt",
            CertificateSource::Upload => "upload",
        }
    }
}

/// `cloudpanel.certificate.install`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateInstall {
    pub domain: Domain,
    pub source: CertificateSource,
    /// Let's Encrypt only: more names the certificate covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alternative_names: Vec<Domain>,
    /// Upload only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
    /// Upload only. Secret field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PrivateKey>,
    /// Upload only, optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_chain: Option<CertificateChain>,
}

impl CertificateInstall {
    /// Each source takes its own fields: an upload needs the certificate
    /// and the key, Let's Encrypt takes neither.
    pub fn check(&self) -> Result<(), String> {
        let uploaded = [
            ("certificate", self.certificate.is_some()),
            ("private_key", self.private_key.is_some()),
            ("certificate_chain", self.certificate_chain.is_some()),
        ];
        match self.source {
            CertificateSource::LetsEncrypt => {
                if let Some((field, _)) = uploaded.iter().find(|(_, given)| *given) {
                    return Err(format!("a lets-encrypt certificate takes no {field}"));
                }
                if self.subject_alternative_names.len() > MAX_SUBJECT_ALTERNATIVE_NAMES {
                    return Err(format!(
                        "at most {MAX_SUBJECT_ALTERNATIVE_NAMES} subject_alternative_names"
                    ));
                }
                if self.subject_alternative_names.contains(&self.domain) {
                    return Err("subject_alternative_names repeats the domain".into());
                }
            }
            CertificateSource::Upload => {
                if let Some((field, _)) = uploaded[..2].iter().find(|(_, given)| !*given) {
                    return Err(format!("an upload needs {field}"));
                }
                if !self.subject_alternative_names.is_empty() {
                    return Err(
                        "an upload takes no subject_alternative_names (the certificate names them)"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// The body's schema, for the OpenAPI document (the PEM rules are the
    /// parser's: no pattern states them).
    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
        let pem = |description: &str, max: usize| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
                .min_length(Some(1))
                .max_length(Some(max))
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("domain", Domain::schema())
            .required("domain")
            .property(
                "source",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["lets-encrypt", "upload"])),
            )
            .required("source")
            .property(
                "subject_alternative_names",
                ArrayBuilder::new()
                    .description(Some("lets-encrypt only: more names to cover"))
                    .items(Domain::schema())
                    .max_items(Some(MAX_SUBJECT_ALTERNATIVE_NAMES)),
            )
            .property(
                "certificate",
                pem(
                    "upload only: one PEM certificate (-----BEGIN CERTIFICATE-----)",
                    MAX_CERTIFICATE_LEN,
                ),
            )
            .property(
                "private_key",
                pem(
                    "upload only: its unencrypted PEM private key. Secret: stored apart, \
                     shown as \"***\"",
                    MAX_PRIVATE_KEY_LEN,
                ),
            )
            .property(
                "certificate_chain",
                pem(
                    "upload only, optional: the intermediate PEM certificates",
                    MAX_CERTIFICATE_LEN,
                ),
            )
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ))
            .into()
    }
}

crate::name_schema!(CertificateInstall);

#[cfg(test)]
mod tests {
    use super::*;

    /// A PEM block of `label` around `der` (base64, 64 columns).
    fn pem(label: &str, der: &[u8]) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut text = String::new();
        for chunk in der.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..4 {
                text.push(if i <= chunk.len() {
                    B64[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn certificates_and_keys_must_be_the_pem_they_claim_to_be() {
        let sequence = [0x30, 0x03, 0x02, 0x01, 0x01];
        let cert = pem("CERTIFICATE", &sequence);
        let key = pem("PRIVATE KEY", &sequence);
        assert!(Certificate::parse(&cert).is_ok());
        assert!(CertificateChain::parse(&format!("{cert}{cert}")).is_ok());
        assert!(PrivateKey::parse(&key).is_ok());
        assert!(PrivateKey::parse(&pem("RSA PRIVATE KEY", &sequence)).is_ok());
        assert!(PrivateKey::parse(&pem("EC PRIVATE KEY", &sequence)).is_ok());

        for bad in [
            "",
            "not pem",
            &format!("{cert}{cert}"),
            &pem("CERTIFICATE", b"\x04\x01x"),
            &format!("{cert}{key}"),
            &key,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n",
        ] {
            assert!(Certificate::parse(bad).is_err(), "certificate {bad:?}");
        }
        let secret_looking = pem("PRIVATE KEY", b"\x04top-secret-bytes");
        for bad in [
            String::new(),
            cert.clone(),
            format!("{key}{key}"),
            pem("ENCRYPTED PRIVATE KEY", &sequence),
            format!("{key}{cert}"),
            pem("PRIVATE KEY", b"\x04\x01x"),
            "-----BEGIN PRIVATE KEY-----\nsecret-not-base64\n-----END PRIVATE KEY-----\n".into(),
            secret_looking,
        ] {
            let error = PrivateKey::parse(&bad).unwrap_err();
            assert!(!error.to_string().contains("secret"), "{error}");
            assert!(
                bad.is_empty() || !error.to_string().contains(bad.trim()),
                "{error}"
            );
        }
        assert!(!format!("{:?}", PrivateKey::parse(&key).unwrap()).contains("BEGIN"));
    }

    #[test]
    fn each_source_takes_its_own_fields_and_the_key_is_a_secret_field() {
        use crate::families::Action;
        use serde_json::json;
        let sequence = [0x30, 0x03, 0x02, 0x01, 0x01];
        let (cert, key) = (pem("CERTIFICATE", &sequence), pem("PRIVATE KEY", &sequence));
        let install =
            |payload: serde_json::Value| Action::parse("cloudpanel.certificate.install", payload);
        let upload = install(json!({"domain": "www.example.com", "source": "upload",
            "certificate": cert, "private_key": key, "certificate_chain": cert}))
        .unwrap();
        assert_eq!(upload.secret_fields(), ["private_key"]);
        assert_eq!(
            upload.resource().as_deref(),
            Some("cloudpanel:site:www.example.com")
        );
        assert!(upload.rerun_safe());
        assert!(!format!("{upload:?}").contains("BEGIN PRIVATE"));
        assert_eq!(
            Action::parse(upload.kind(), upload.payload()).unwrap(),
            upload
        );
        assert!(
            install(json!({"domain": "example.com", "source": "lets-encrypt",
                "subject_alternative_names": ["www.example.com"]}))
            .is_ok()
        );
        for bad in [
            json!({"domain": "example.com", "source": "lets-encrypt", "certificate": cert}),
            json!({"domain": "example.com", "source": "lets-encrypt",
                   "subject_alternative_names": ["example.com"]}),
            json!({"domain": "example.com", "source": "lets-encrypt",
                   "subject_alternative_names": ["-x.com"]}),
            json!({"domain": "example.com", "source": "upload", "certificate": cert}),
            json!({"domain": "example.com", "source": "upload", "private_key": key}),
            json!({"domain": "example.com", "source": "upload", "certificate": cert,
                   "private_key": key, "subject_alternative_names": ["a.example.com"]}),
            json!({"domain": "example.com", "source": "upload", "certificate": key,
                   "private_key": key}),
            json!({"domain": "example.com", "source": "self-signed"}),
            json!({"domain": "a;b", "source": "lets-encrypt"}),
            json!({"domain": "example.com"}),
        ] {
            assert!(install(bad.clone()).is_err(), "{bad} was accepted");
        }
    }
}
