//! `cloudpanel.certificate.install`: a site's certificate from Let's
//! Encrypt (`clpctl lets-encrypt:install:certificate`) or uploaded
//! (`clpctl site:install:certificate`).
//!
//! Invariant: **the private key never reaches an argument vector, a log
//! line or a result.** An upload's certificate, key and chain are written
//! to 0600 files in a fresh 0700 directory (`tempfile`), clpctl is given
//! their paths, and the directory is removed when the command ends, also
//! when it fails, times out or is cancelled (the directory is dropped on
//! every return). The result names the certificate by its SHA-256
//! fingerprint only.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use opsqueue_shared::families::cloudpanel::{CertificateInstall, CertificateSource};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use sha2::{Digest, Sha256};

use super::{Cloudpanel, codes};
use crate::context::Context;
use crate::drivers::driver::{DriverError, Outcome};

impl Cloudpanel {
    pub(super) async fn certificate_install(
        &self,
        install: &CertificateInstall,
        ctx: &Context,
    ) -> Result<Outcome, DriverError> {
        let domain = &install.domain;
        if self.site_owners(domain)?.is_empty() {
            return Err(DriverError::permanent(
                codes::SITE_NOT_FOUND,
                format!("no site {domain} to install a certificate on"),
            ));
        }
        let outcome = Outcome::changed()
            .with("domain", domain)
            .with("source", install.source.as_str());
        match install.source {
            CertificateSource::LetsEncrypt => {
                let mut args = vec![
                    "lets-encrypt:install:certificate".to_owned(),
                    format!("--domainName={domain}"),
                ];
                let names: Vec<&str> = install
                    .subject_alternative_names
                    .iter()
                    .map(|n| n.as_str())
                    .collect();
                if !names.is_empty() {
                    args.push(format!("--subjectAlternativeName={}", names.join(",")));
                }
                self.clpctl(ctx, args, &[]).await?;
                Ok(outcome.with("subject_alternative_names", names))
            }
            CertificateSource::Upload => {
                let (Some(certificate), Some(key)) = (&install.certificate, &install.private_key)
                else {
                    unreachable!("an upload's certificate and key are checked at parse");
                };
                let dir = tempfile::Builder::new()
                    .prefix("opsqueue-certificate-")
                    .tempdir()
                    .map_err(unwritable)?;
                let key_file = private_file(dir.path(), "private-key.pem", key.as_str())?;
                let cert_file = private_file(dir.path(), "certificate.pem", certificate.as_str())?;
                let mut args = vec![
                    "site:install:certificate".to_owned(),
                    format!("--domainName={domain}"),
                    format!("--privateKey={}", key_file.display()),
                    format!("--certificate={}", cert_file.display()),
                ];
                if let Some(chain) = &install.certificate_chain {
                    let chain_file = private_file(dir.path(), "chain.pem", chain.as_str())?;
                    args.push(format!("--certificateChain={}", chain_file.display()));
                }
                let ran = self.clpctl(ctx, args, &[]).await;
                dir.close().map_err(unwritable)?;
                ran?;
                Ok(outcome.with("sha256", fingerprint(certificate.as_str())))
            }
        }
    }
}

fn unwritable(e: std::io::Error) -> DriverError {
    DriverError::retryable(
        codes::CERTIFICATE_FILES,
        format!("the certificate's temporary files: {e}"),
    )
}

/// Writes `text` to a new 0600 file `name` in `dir`.
fn private_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, DriverError> {
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(unwritable)?;
    file.write_all(text.as_bytes()).map_err(unwritable)?;
    file.sync_all().map_err(unwritable)?;
    Ok(path)
}

/// The SHA-256 of the certificate's DER, as hex (what `openssl x509
/// -fingerprint -sha256` shows, without the colons).
fn fingerprint(pem: &str) -> Option<String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some(
        Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}
