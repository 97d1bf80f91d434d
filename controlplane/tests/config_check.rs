//! `blipmqctl config check` against the shipped blipmq.toml and bad files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../blipmq.toml");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> TempFile {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("blipmqctl-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        // Private to its owner, as a file with secrets must be.
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&path, private).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn blipmqctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blipmqctl"))
        .args(args)
        .output()
        .expect("blipmqctl runs")
}

fn check(path: &Path) -> (i32, String, String) {
    let output = blipmqctl(&["config", "check", path.to_str().unwrap()]);
    (
        output.status.code().expect("exited"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn shipped_config_passes_and_prints_every_key() {
    let (code, stdout, stderr) = check(Path::new(SHIPPED));
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    for needle in [
        "[server]",
        "listen = \"127.0.0.1:9999\"",
        "[limits]",
        "max_pending_bytes = 67108864",
        "[auth]",
        "[log]",
        "[dataplane]",
        "backend = \"kernel\"",
    ] {
        assert!(stdout.contains(needle), "`{needle}` missing from\n{stdout}");
    }
}

#[test]
fn partial_config_prints_the_defaults_filled_in() {
    let file = TempFile::new("[server]\nworkers = 3\nping_interval = \"250ms\"\n");
    let (code, stdout, stderr) = check(&file.0);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("workers = 3"), "{stdout}");
    assert!(stdout.contains("ping_interval = \"250ms\""), "{stdout}");
    assert!(stdout.contains("max_payload = 1048576"), "{stdout}");
    assert!(stdout.contains("cache_subjects = 4096"), "{stdout}");

    // The output is itself a valid config for the same settings.
    let again = TempFile::new(&stdout);
    let (code, stdout_again, _) = check(&again.0);
    assert_eq!(code, 0);
    assert_eq!(stdout_again, stdout);
}

#[test]
fn token_is_redacted_unless_asked() {
    let file = TempFile::new("[auth]\ntoken = \"hunter2\"\n");
    let (code, stdout, _) = check(&file.0);
    assert_eq!(code, 0);
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("token = \"<redacted>\""), "{stdout}");
    let output = blipmqctl(&[
        "config",
        "check",
        "--show-secrets",
        file.0.to_str().unwrap(),
    ]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("token = \"hunter2\""));
}

#[test]
fn users_secrets_are_redacted_and_a_readable_file_with_them_is_refused() {
    let file = TempFile::new(
        "[[auth.users]]\nuser = \"alice\"\npassword = \"hunter2\"\n\
         [[auth.users]]\nuser = \"svc\"\ntoken = \"tok-9\"\npermissions.publish = [\"a.>\"]\n",
    );
    let (code, stdout, stderr) = check(&file.0);
    assert_eq!(code, 0, "{stderr}");
    for secret in ["hunter2", "tok-9"] {
        assert!(!stdout.contains(secret), "{stdout}");
    }
    assert!(stdout.contains("user = \"alice\""), "{stdout}");
    assert_eq!(stdout.matches("\"<redacted>\"").count(), 2, "{stdout}");

    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    std::fs::set_permissions(&file.0, readable).unwrap();
    let (code, stdout, stderr) = check(&file.0);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stderr.contains("mode is 0644") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn unknown_key_fails_naming_the_key_and_line() {
    let file = TempFile::new("# test\n[limits]\nmax_payload = 1024\nmax_paylod = 2048\n");
    let (code, stdout, stderr) = check(&file.0);
    assert_eq!(code, 1, "stdout: {stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains(&file.0.display().to_string()), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("limits.max_paylod"), "{stderr}");
    assert!(stderr.contains("unknown field `max_paylod`"), "{stderr}");
}

#[test]
fn invalid_value_fails_naming_the_key_and_line() {
    let file = TempFile::new("[limits]\nmax_payload = 0\n");
    let (code, _, stderr) = check(&file.0);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("line 2: limits.max_payload must be between 1 and 67108864"),
        "{stderr}"
    );

    // dpdk needs its address (or, in a build without DPDK, DPDK itself).
    let file = TempFile::new("[dataplane]\nbackend = \"dpdk\"\n");
    let (code, _, stderr) = check(&file.0);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("dpdk.ip must be the broker's IPv4 address")
            || stderr.contains("needs a blipmqd built with DPDK"),
        "{stderr}"
    );
}

#[test]
fn missing_file_fails() {
    let path = std::env::temp_dir().join(format!(
        "blipmqctl-test-missing-{}.toml",
        std::process::id()
    ));
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 1);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(blipmqctl(&["config", "check"]).status.code(), Some(2));
    assert_eq!(blipmqctl(&["nonsense"]).status.code(), Some(2));
    let help = blipmqctl(&["config", "check", "--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("FILE"));
}

#[test]
fn hash_password_prints_a_bcrypt_hash_that_blipmqd_accepts() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_blipmqctl"))
        .args(["config", "hash-password", "--cost", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("blipmqctl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pass\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    assert!(!hash.contains("s3cret"));
    let file = TempFile::new(&format!(
        "[[auth.users]]\nuser = \"u\"\npassword = \"{hash}\"\n"
    ));
    let (code, _, stderr) = check(&file.0);
    assert_eq!(code, 0, "{stderr}");
    let empty = blipmqctl(&["config", "hash-password"]);
    assert!(!empty.status.success(), "no password on stdin");
}
