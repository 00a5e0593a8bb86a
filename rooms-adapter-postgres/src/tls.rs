//! TLS for both the publishing pool and the listening connection: which
//! `sslmode` the connections use, and the connector that speaks it.
//!
//! What the `sslmode` of the connection string and the builder's TLS
//! options mean together is in the crate docs ([TLS](crate#tls)).

use tokio_postgres::config::SslMode;

use crate::config::PostgresConfig;
use crate::error::PostgresError;

/// What connects the publishing pool and the listening connection.
#[derive(Clone, Default)]
pub(crate) enum Connector {
    /// No TLS (`sslmode` is `disable`).
    #[default]
    Plain,
    /// rustls, verifying the server.
    #[cfg(feature = "tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Connector {
    /// Whether the connections speak TLS (when the server offers it, under
    /// `prefer`).
    pub(crate) fn is_tls(&self) -> bool {
        !matches!(self, Connector::Plain)
    }
}

/// Decides the `sslmode` of `config` (see [TLS](crate#tls)), sets it
/// on the tokio-postgres config, and builds the connector; the error names
/// the setting, and the file when a certificate file is unreadable or
/// invalid.
pub(crate) fn resolve(config: &mut PostgresConfig) -> Result<(), PostgresError> {
    let asked = config.pg.get_ssl_mode();
    #[cfg(feature = "tls")]
    {
        let settings = &config.tls;
        let options =
            !settings.root_certificates.is_empty() || settings.client_certificate.is_some();
        let mode = match asked {
            SslMode::Disable if settings.require || options => {
                return Err(PostgresError::InvalidSetting {
                    setting: "require_tls",
                    reason: "the connection string says sslmode=disable, and TLS options \
                             (require_tls, tls_root_certificates or tls_client_certificate) are \
                             set: drop one or the other"
                        .into(),
                });
            }
            SslMode::Require => SslMode::Require,
            _ if settings.require => SslMode::Require,
            SslMode::Prefer if options => SslMode::Prefer,
            _ => SslMode::Disable,
        };
        config.pg.ssl_mode(mode);
        config.connector = if mode == SslMode::Disable {
            Connector::Plain
        } else {
            Connector::Rustls(rustls_connector(settings)?)
        };
        Ok(())
    }
    #[cfg(not(feature = "tls"))]
    {
        if asked == SslMode::Require {
            return Err(PostgresError::InvalidSetting {
                setting: "connection string",
                reason: "sslmode=require needs the `tls` feature of rooms-adapter-postgres".into(),
            });
        }
        config.pg.ssl_mode(SslMode::Disable);
        config.connector = Connector::Plain;
        Ok(())
    }
}

/// The rustls connector of `settings`: the system's roots and the given
/// ones, and the client certificate if any.
#[cfg(feature = "tls")]
fn rustls_connector(
    settings: &crate::config::TlsSettings,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PostgresError> {
    use std::sync::Arc;

    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    let (system_count, _) = roots.add_parsable_certificates(system.certs);
    for path in &settings.root_certificates {
        let invalid = |reason: String| PostgresError::InvalidSetting {
            setting: "tls_root_certificates",
            reason: format!("{}: {reason}", path.display()),
        };
        let certs = read_certificates(path).map_err(invalid)?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|error| invalid(format!("not a usable root certificate: {error}")))?;
        }
    }
    if roots.is_empty() {
        let why = system
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(PostgresError::InvalidSetting {
            setting: "tls_root_certificates",
            reason: format!(
                "no root certificate to verify the server with: the system's could not be \
                 loaded ({why}), and none were given"
            ),
        });
    }
    tracing::debug!(
        system = system_count,
        files = settings.root_certificates.len(),
        "postgres TLS roots loaded"
    );
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| PostgresError::InvalidSetting {
        setting: "require_tls",
        reason: format!("rustls refused its own protocol versions: {error}"),
    })?
    .with_root_certificates(roots);
    let config = match &settings.client_certificate {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let invalid = |reason: String| PostgresError::InvalidSetting {
                setting: "tls_client_certificate",
                reason,
            };
            let chain = read_certificates(cert)
                .map_err(|reason| invalid(format!("{}: {reason}", cert.display())))?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|error| {
                invalid(format!(
                    "{}: not a readable PEM private key: {error}",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|error| {
                    invalid(format!(
                        "the key in {} does not go with the certificate in {}: {error}",
                        key.display(),
                        cert.display()
                    ))
                })?
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Every certificate of a PEM file: at least one.
#[cfg(feature = "tls")]
fn read_certificates(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| format!("not a readable PEM certificate file: {error}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it (`-----BEGIN CERTIFICATE-----`)".into());
    }
    Ok(certs)
}

/// What went wrong, in words, when a client error is about TLS in a way
/// retrying cannot fix: the server's certificate is not trusted, the
/// server has no TLS, or it refused ours; `None` otherwise (a network fault
/// during the handshake is retryable).
pub(crate) fn setup_error(error: &tokio_postgres::Error) -> Option<String> {
    #[cfg(feature = "tls")]
    if let Some(rustls) = rustls_error(error) {
        return Some(match rustls {
            rustls::Error::InvalidCertificate(_) => format!(
                "the server's certificate is not trusted ({rustls}): is its CA among the \
                 root certificates (tls_root_certificates), and is the host name in it?"
            ),
            // A rejected client certificate shows up after the handshake
            // (TLS 1.3), as a fatal alert on the first read.
            rustls::Error::AlertReceived(_) => format!(
                "the server refused the handshake ({rustls}): does it accept the client \
                 certificate (tls_client_certificate)?"
            ),
            other => other.to_string(),
        });
    }
    // tokio-postgres keeps its error kinds private: a handshake failure
    // reads "error performing TLS handshake"; its own causes ("server does
    // not support TLS", ...) are not I/O errors.
    let cause = std::error::Error::source(error)?;
    let handshake = error
        .to_string()
        .starts_with("error performing TLS handshake");
    (handshake && cause.downcast_ref::<std::io::Error>().is_none())
        .then(|| format!("{cause} (TLS is required: sslmode=require or require_tls)"))
}

/// The rustls error under a client error, if any.
#[cfg(feature = "tls")]
fn rustls_error(error: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(current) = cause {
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        let inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if inner.is_some() {
            return inner;
        }
        cause = current.source();
    }
    None
}
