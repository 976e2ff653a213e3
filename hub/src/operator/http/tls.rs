//! HTTPS for the page, `/metrics` and the API: a certificate and its key
//! from PEM files (`security.http_cert_file`, `http_key_file`), served
//! with rustls (ring). The files are looked at again at each new
//! connection: a renewed certificate (certbot, an internal CA's agent) is
//! served from the next connection on, without a restart; one that cannot
//! be read or does not match its key is logged once and the one in use is
//! kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::ring::{default_provider, sign::any_supported_type};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// The certificate served, and the files it comes from.
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    held: Mutex<Held>,
}

#[derive(Debug)]
struct Held {
    /// What the files were when they were last read.
    stamp: Stamp,
    served: Arc<CertifiedKey>,
}

/// A file as last seen: modified when, its inode and its length (a file
/// moved over another, as certbot renews, is a new inode).
type Seen = Option<(SystemTime, u64, u64)>;
type Stamp = (Seen, Seen);

impl Certs {
    /// Reads the certificate chain in `cert` and its key in `key`; fails,
    /// saying which file and what is wrong, when either cannot be read or
    /// they do not belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certs>, String> {
        let stamp = stamp(cert, key);
        let served = read(cert, key)?;
        Ok(Arc::new(Certs {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            held: Mutex::new(Held { stamp, served }),
        }))
    }

    /// The TLS setup of the HTTP listener: TLS 1.2 and 1.3, HTTP/1.1.
    pub fn server_config(self: &Arc<Certs>) -> Result<rustls::ServerConfig, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The certificate to serve now: read again if its files changed.
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut held = self.held.lock().ok()?;
        let now = stamp(&self.cert, &self.key);
        if now != held.stamp {
            // Tried once per change of the files: a broken one is not
            // read again at every connection.
            held.stamp = now;
            match read(&self.cert, &self.key) {
                Ok(served) => {
                    info!(cert = %self.cert.display(), "HTTPS certificate read again; served from now on");
                    held.served = served;
                }
                Err(e) => {
                    warn!(error = %e, "the HTTPS certificate files changed but cannot be used; the one read before is still served")
                }
            }
        }
        Some(held.served.clone())
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let seen = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.ino(), m.len()))
    };
    (seen(cert), seen(key))
}

/// The PEM certificates in `path`, the file the configuration names as
/// `key`; fails, naming both, when it cannot be read or holds none.
pub fn pem_certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading {key} {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {shown} holds no certificate (want PEM, -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// The chain in `cert` (the server's certificate first) with the key in
/// `key`, checked to belong together.
fn read(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let (cert_shown, key_shown) = (cert.display(), key.display());
    let chain = pem_certificates(cert, "security.http_cert_file")?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!("security.http_key_file {key_shown}: {e} (want a PEM private key, unencrypted)")
    })?;
    let signer =
        any_supported_type(&der).map_err(|e| format!("security.http_key_file {key_shown}: {e}"))?;
    let served = CertifiedKey::new(chain, signer);
    served.keys_match().map_err(|e| {
        format!("security.http_key_file {key_shown} is not the key of {cert_shown}: {e}")
    })?;
    Ok(Arc::new(served))
}
