//! Test certificates made by the `openssl` command (installed by `.ci/run`):
//! a self-signed server certificate for 127.0.0.1, and a throwaway CA with
//! certificates it issues, for mutual TLS.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its private key, as PEM files.
pub(crate) struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `made`, or `None` with a note when openssl is missing; in CI a missing
/// openssl fails the test instead of skipping it.
pub(crate) fn or_skip<T>(made: Option<T>) -> Option<T> {
    if made.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the openssl command is needed to make the test certificates"
        );
        eprintln!("openssl is not installed: skipping a TLS test");
    }
    made
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// A self-signed certificate for 127.0.0.1.
pub(crate) fn self_signed(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let extensions = [
        "subjectAltName=IP:127.0.0.1",
        "basicConstraints=critical,CA:FALSE",
    ];
    self_signed_with("/CN=enroll-test", &extensions, &key, &cert).then_some((cert, key))
}

/// `openssl req -x509`: a new EC key and a certificate for `subject` with
/// `extensions`, valid two days.
fn self_signed_with(subject: &str, extensions: &[&str], key: &Path, cert: &Path) -> bool {
    let mut args = vec!["req", "-x509"];
    args.extend(EC_KEY);
    args.extend(["-nodes", "-days", "2", "-subj", subject]);
    for extension in extensions {
        args.extend(["-addext", extension]);
    }
    args.push("-keyout");
    openssl_with_out(&args, key, cert)
}

/// `args` then `KEY -out CERT`.
fn openssl_with_out(args: &[&str], key: &Path, cert: &Path) -> bool {
    let mut command = Command::new("openssl");
    command.args(args).arg(key).arg("-out").arg(cert);
    command.output().is_ok_and(|o| o.status.success())
}

/// A throwaway certificate authority in `dir`.
pub(crate) struct TestCa {
    pub pem: Pem,
    dir: PathBuf,
}

impl TestCa {
    pub(crate) fn new(dir: &Path) -> Option<TestCa> {
        let pem = Pem {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        };
        let extensions = [
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        self_signed_with("/CN=enroll-test-ca", &extensions, &pem.key, &pem.cert).then_some(TestCa {
            pem,
            dir: dir.to_path_buf(),
        })
    }

    /// A certificate for `san` (`DNS:ehr.example` or `IP:127.0.0.1`),
    /// good for both ends of a TLS connection, signed by this CA.
    pub(crate) fn issue(&self, stem: &str, san: &str) -> Option<Pem> {
        let pem = Pem {
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
        };
        let csr = self.dir.join(format!("{stem}.csr"));
        let ext = self.dir.join(format!("{stem}.ext"));
        let extensions = format!(
            "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        );
        std::fs::write(&ext, extensions).ok()?;
        let subject = format!("/CN={stem}");
        let mut request = vec!["req"];
        request.extend(EC_KEY);
        request.extend(["-nodes", "-subj", &subject, "-keyout"]);
        if !openssl_with_out(&request, &pem.key, &csr) {
            return None;
        }
        let made = Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.pem.cert)
            .arg("-CAkey")
            .arg(&self.pem.key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&pem.cert)
            .output()
            .is_ok_and(|o| o.status.success());
        made.then_some(pem)
    }
}

/// A TLS client that trusts `server_ca` and, when given, shows `client`'s
/// certificate.
pub(crate) fn connector(server_ca: &Path, client: Option<&Pem>) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(server_ca).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let chain = CertificateDer::pem_file_iter(&pem.cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&pem.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}
