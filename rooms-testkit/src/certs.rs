//! [`TestCerts`]: certificates made at test time (rcgen, ECDSA P-256), as
//! PEM files in a temporary directory removed on drop: a CA, a server
//! certificate it signed for `localhost` and `127.0.0.1`, client
//! certificates it signs on demand, and a second CA that signed nothing a
//! server presents (to see verification fail).
//!
//! ```no_run
//! use rooms_testkit::certs::TestCerts;
//!
//! let certs = TestCerts::generate()?;
//! println!("trust {}", certs.ca().display());
//! println!("serve {} with {}", certs.server_cert().display(), certs.server_key().display());
//! let (cert, key) = certs.client("app")?; // CN=app, signed by the CA
//! # let _ = (cert, key);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA, a server certificate and a second, unrelated CA, as PEM files.
pub struct TestCerts {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    other_ca: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCerts")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn invalid(error: rcgen::Error) -> io::Error {
    io::Error::other(format!("rcgen: {error}"))
}

/// A CA named `name`: its certificate in `{dir}/{file}`, and its issuer.
fn new_ca(dir: &Path, name: &str, file: &str) -> io::Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::generate().map_err(invalid)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(invalid)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(invalid)?;
    std::fs::write(dir.join(file), cert.pem())?;
    Ok(Issuer::new(params, key))
}

/// A leaf certificate signed by `issuer`, written as `{stem}.crt` and
/// `{stem}.key`.
fn new_leaf(
    dir: &Path,
    stem: &str,
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> io::Result<(PathBuf, PathBuf)> {
    let key = KeyPair::generate().map_err(invalid)?;
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).map_err(invalid)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).map_err(invalid)?;
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok((cert_path, key_path))
}

impl TestCerts {
    /// Makes the CAs and the server certificate in a new temporary
    /// directory.
    pub fn generate() -> io::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rooms-certs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let ca = new_ca(&dir, "rooms test CA", "ca.crt")?;
        let other_ca = new_ca(&dir, "rooms unrelated CA", "other-ca.crt")?;
        new_leaf(
            &dir,
            "server",
            &ca,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        Ok(Self { dir, ca, other_ca })
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The certificate of a CA that signed nothing a server here presents.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }

    /// The server certificate (for `localhost` and `127.0.0.1`, signed by
    /// [`ca`](Self::ca)).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The server certificate's key (PKCS#8 PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// A client certificate with common name `name`, signed by the CA:
    /// `(certificate, key)`.
    pub fn client(&self, name: &str) -> io::Result<(PathBuf, PathBuf)> {
        new_leaf(
            &self.dir,
            &format!("client-{name}"),
            &self.ca,
            name,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// A client certificate with common name `name` signed by the other
    /// CA, which servers here do not trust: `(certificate, key)`.
    pub fn untrusted_client(&self, name: &str) -> io::Result<(PathBuf, PathBuf)> {
        new_leaf(
            &self.dir,
            &format!("untrusted-{name}"),
            &self.other_ca,
            name,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
