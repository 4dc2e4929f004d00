//! PostgreSQL over TLS: a throwaway server with the test certificate
//! (fixtures/tls), reached with `sslmode=verify-full`. The right CA
//! connects; another CA, or a host name the certificate does not carry, is
//! refused; and no error message shows the password from the URL.
//!
//! Needs PostgreSQL's server binaries (initdb, pg_ctl) and root (to run
//! them as the `postgres` user); outside CI it is skipped without them.

use std::path::{Path, PathBuf};
use std::process::Command;

const PASSWORD: &str = "hunter2-in-the-url";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tls")
}

fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn as_postgres(bin: &Path, program: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program))
        .args(args)
        .output()
        .expect("running a PostgreSQL tool")
}

/// A PostgreSQL server with TLS on, stopped on drop.
struct Server {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().to_string();
        as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "stop"],
        );
    }
}

fn start() -> Option<Server> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let usable = pg_bin().filter(|_| is_root());
    let Some(bin) = usable else {
        assert!(
            !ci,
            "CI=true: PostgreSQL server binaries and root are required"
        );
        eprintln!("skipping: no PostgreSQL server binaries, or not root");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    for (from, to) in [
        ("server.pem", "server.pem"),
        ("server-key.pem", "server.key"),
    ] {
        std::fs::copy(fixtures().join(from), root.join(to)).unwrap();
    }
    let chown = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::set_permissions(
        root.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let data = root.join("data");
    let data_s = data.to_string_lossy().to_string();
    let init = as_postgres(
        &bin,
        "initdb",
        &["-D", &data_s, "-U", "postgres", "--auth=trust"],
    );
    assert!(
        init.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = format!(
        "-p {port} -k {root} -c listen_addresses=127.0.0.1,127.0.0.2 -c fsync=off -c ssl=on \
         -c ssl_cert_file={root}/server.pem -c ssl_key_file={root}/server.key",
        root = root.display()
    );
    let log = root.join("log").to_string_lossy().to_string();
    let started = as_postgres(
        &bin,
        "pg_ctl",
        &["-D", &data_s, "-l", &log, "-w", "-o", &options, "start"],
    );
    assert!(
        started.status.success(),
        "pg_ctl start: {} {}",
        String::from_utf8_lossy(&started.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    Some(Server {
        bin,
        data,
        port,
        _dir: dir,
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn url(host: &str, port: u16, ca: &str) -> String {
    format!(
        "postgres://postgres:{PASSWORD}@{host}:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        fixtures().join(ca).display()
    )
}

#[tokio::test]
async fn verify_full_checks_the_server_certificate() {
    let Some(server) = start() else { return };
    let store = streamhouse_metadata::open(&url("127.0.0.1", server.port, "ca.pem"))
        .await
        .expect("verify-full with the right CA connects");
    store.list_topics().await.unwrap();

    for (host, ca, why) in [
        (
            "127.0.0.1",
            "other-ca.pem",
            "a CA that did not sign the certificate",
        ),
        (
            "127.0.0.2",
            "ca.pem",
            "an address the certificate does not name",
        ),
    ] {
        let Err(e) = streamhouse_metadata::open(&url(host, server.port, ca)).await else {
            panic!("verify-full connected with {why}");
        };
        let mut shown = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            shown.push_str(&format!(" / {s}"));
            source = s.source();
        }
        eprintln!("refused with {why}: {shown}");
        assert!(!shown.contains(PASSWORD), "the password leaked: {shown}");
    }
}
