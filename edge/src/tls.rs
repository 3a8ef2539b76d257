//! TLS for the HTTPS listener: certificates chosen by SNI through a rustls
//! `ResolvesServerCert` that pingora's rustls listener calls on every handshake, so a
//! new table of certificates takes effect without restarting anything.
//!
//! With no certificate configured, a local CA and a server certificate for
//! localhost/127.0.0.1/::1 are generated once into `<node data dir>/tls/` and reused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use edgebox_config::TlsSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("generating the local CA in {dir}: {message}")]
    Generate { dir: PathBuf, message: String },
}

/// The certificates in force: exact names, wildcard suffixes, and a default for clients
/// that send no (or an unknown) SNI.
#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

/// SNI resolver over a hot-swappable table.
#[derive(Debug)]
pub struct CertResolver {
    table: ArcSwap<Table>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(key) = table.exact.get(&name) {
                return Some(key.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(key) = table.wildcard.get(parent)
            {
                return Some(key.clone());
            }
        }
        table.default.clone()
    }
}

/// Where the certificates come from, and the resolver serving them.
pub struct CertStore {
    pub resolver: Arc<CertResolver>,
    /// `Some` when the certificates are the generated local ones.
    pub generated_ca: Option<PathBuf>,
    /// Files and their modification times when last loaded, for the change watcher.
    watched: parking_lot::Mutex<Vec<(PathBuf, Option<SystemTime>)>>,
    settings: parking_lot::Mutex<TlsSettings>,
}

impl CertStore {
    /// Loads the configured certificates, or generates/reuses the local CA.
    pub fn load(settings: &TlsSettings, node_dir: &Path) -> Result<Self, TlsError> {
        let (table, generated_ca, files) = if settings.certificates.is_empty() {
            let local = ensure_local_ca(&node_dir.join("tls"))?;
            let key = load_pair(&local.cert, &local.key)?;
            let table = Table {
                default: Some(key),
                ..Table::default()
            };
            (table, Some(local.ca), Vec::new())
        } else {
            let (table, files) = build_table(settings)?;
            (table, None, files)
        };
        Ok(Self {
            resolver: Arc::new(CertResolver {
                table: ArcSwap::from_pointee(table),
            }),
            generated_ca,
            watched: parking_lot::Mutex::new(stamp(&files)),
            settings: parking_lot::Mutex::new(settings.clone()),
        })
    }

    /// Checks new settings (every file parses, every key matches its certificate)
    /// without applying them.
    pub fn check(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        if settings.certificates.is_empty() {
            return Ok(());
        }
        build_table(settings).map(|_| ())
    }

    /// Re-reads the certificates of `settings`; on any error the old table stays.
    pub fn apply(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        if settings.certificates.is_empty() {
            // Generated certificates do not change on reload.
            if self.generated_ca.is_some() {
                *self.settings.lock() = settings.clone();
                return Ok(());
            }
            return Err(TlsError::Invalid {
                path: PathBuf::from("[tls]"),
                message: "removing every configured certificate needs a restart".into(),
            });
        }
        let (table, files) = build_table(settings)?;
        self.resolver.table.store(Arc::new(table));
        *self.watched.lock() = stamp(&files);
        *self.settings.lock() = settings.clone();
        Ok(())
    }

    /// Polls the certificate files and reloads when one changed.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let changed = {
                let watched = self.watched.lock();
                watched.iter().any(|(path, mtime)| modified(path) != *mtime)
            };
            if changed {
                let settings = self.settings.lock().clone();
                match self.apply(&settings) {
                    Ok(()) => tracing::info!("certificates changed on disk; reloaded"),
                    Err(error) => {
                        tracing::warn!(%error, "certificates changed on disk but do not load; keeping the old ones");
                        // Do not retry the same broken files every tick.
                        let files: Vec<PathBuf> =
                            self.watched.lock().iter().map(|(p, _)| p.clone()).collect();
                        *self.watched.lock() = stamp(&files);
                    }
                }
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn stamp(files: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>)> {
    files.iter().map(|p| (p.clone(), modified(p))).collect()
}

fn build_table(settings: &TlsSettings) -> Result<(Table, Vec<PathBuf>), TlsError> {
    let mut table = Table::default();
    let mut files = Vec::new();
    for certificate in &settings.certificates {
        let key = load_pair(&certificate.cert, &certificate.key)?;
        files.push(certificate.cert.clone());
        files.push(certificate.key.clone());
        for name in &certificate.names {
            let name = name.to_ascii_lowercase();
            if let Some(suffix) = name.strip_prefix("*.") {
                table.wildcard.insert(suffix.to_owned(), key.clone());
            } else {
                table.exact.insert(name, key.clone());
            }
        }
        if table.default.is_none() {
            table.default = Some(key);
        }
    }
    Ok((table, files))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses a PEM chain and key and checks that they belong together.
fn load_pair(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let invalid = |path: &Path, message: String| TlsError::Invalid {
        path: path.to_owned(),
        message,
    };
    let cert_pem = read(cert_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cert_path, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(cert_path, "no certificate in file".into()));
    }
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(key_path, format!("no usable private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| invalid(cert_path, format!("certificate and key do not match: {e}")))?;
    Ok(Arc::new(certified))
}

/// Paths of the generated local CA and server certificate.
pub struct LocalCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Generates the local CA and a server certificate in `dir` unless they exist already.
pub fn ensure_local_ca(dir: &Path) -> Result<LocalCa, TlsError> {
    let paths = LocalCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    if paths.ca.exists() && paths.cert.exists() && paths.key.exists() {
        return Ok(paths);
    }
    let fail = |message: String| TlsError::Generate {
        dir: dir.to_owned(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let ca_key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(e.to_string()))?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "edgebox local CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| fail(e.to_string()))?;

    let server_key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(|e| fail(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "edgebox edge");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server = params
        .signed_by(&server_key, &ca)
        .map_err(|e| fail(e.to_string()))?;

    // Each file is replaced atomically, so a crash never leaves half a file. The key
    // is written first and the CA last: a set is only reused when all three parse.
    let write = |path: &Path, contents: &str| -> Result<(), TlsError> {
        edgebox_node::fs::atomic_write(path, contents.as_bytes())
            .map_err(|e| fail(format!("writing {}: {e}", path.display())))
    };
    write(&paths.key, &server_key.serialize_pem())?;
    write(&paths.cert, &format!("{}{}", server.pem(), ca.pem()))?;
    write(&paths.ca, &ca.pem())?;
    Ok(paths)
}
