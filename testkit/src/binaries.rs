//! The workspace's binaries for tests that run them as processes: found in the target
//! directory of the running test (where `cargo nextest run --workspace` put them), or
//! built there on first use, so a test of any binary (`kurir-gateway`, `kurir`, …)
//! needs only its name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The path of workspace binary `name`, built with the running test's profile when it
/// is missing.
///
/// # Panics
/// When it is missing and `cargo build` cannot make it: the test cannot run.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let profile_dir = profile_dir();
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        build(name, &profile_dir);
        assert!(
            path.exists(),
            "cargo built `{name}` but {} is missing",
            path.display()
        );
    }
    built.insert(name.to_owned(), path.clone());
    path
}

/// `target/<profile>`: the parent of the running test executable's `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test");
    let deps = exe.parent().expect("test executable in a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent()
            .expect("deps/ in a profile directory")
            .to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// `cargo build --bin name` into the same target directory and profile.
fn build(name: &str, profile_dir: &Path) {
    let target_dir = profile_dir
        .parent()
        .expect("profile directory in a target directory");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let profile = if profile == "debug" { "dev" } else { profile };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit inside the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--workspace", "--bin", name, "--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build `{name}`: {e}"));
    assert!(
        status.success(),
        "cargo build --bin {name} failed ({status})"
    );
}
