//! A test PKI as files, for servers and clients configured by path (NATS, Redis and
//! Kurir's backbone settings): made with `kurir-tls`'s test CA, no `openssl` needed.

use std::path::{Path, PathBuf};

use kurir_tls::test_certs::TestCa;
pub use kurir_tls::test_certs::{tempdir, TempDir};

/// In one directory: `ca.pem`; `server.pem`/`server.key` and `client.pem`/`client.key`
/// signed by it (both for `localhost` and `127.0.0.1`, each good for server and client
/// authentication); `other-ca.pem`, a CA that signed nothing here.
pub struct BackbonePki {
    dir: PathBuf,
}

impl BackbonePki {
    /// Write the files into `dir` (created if missing).
    ///
    /// # Panics
    /// The directory or a file cannot be written.
    pub fn write(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("PKI directory");
        let ca = TestCa::new("kurir test ca");
        ca.write(&dir.join("ca.pem"));
        for name in ["server", "client"] {
            ca.issue(&format!("kurir test {name}")).write(
                &dir.join(format!("{name}.pem")),
                &dir.join(format!("{name}.key")),
            );
        }
        TestCa::new("kurir test other-ca").write(&dir.join("other-ca.pem"));
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file of the PKI by name (`ca.pem`, `client.key`…).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
