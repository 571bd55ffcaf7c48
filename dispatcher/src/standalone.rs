//! `--standalone` / `KURIR_STANDALONE`: the development node moved to the `kurir`
//! command. For one release the old switch still works: it says so on stderr and
//! replaces this process with the `kurir` binary installed beside this one (same
//! arguments without `--standalone`, same environment), so scripts keep running while
//! they move to `kurir`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;

/// What the alias prints before it hands over.
pub const NOTE: &str =
    "note: `kurir-dispatcher --standalone` is deprecated; the development node is the `kurir` command now";

/// Why the `kurir` binary could not be run.
#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("--standalone runs the `kurir` command, and there is none at {}; build it with `cargo build --release -p kurir` or install it with `cargo install --path kurir`", .0.display())]
    Missing(PathBuf),
    #[error("cannot find this executable's directory: {0}")]
    OwnPath(#[source] std::io::Error),
    #[error("cannot run {}: {source}", path.display())]
    Exec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The `kurir` binary beside this executable.
///
/// # Errors
/// This executable's path is unknown.
pub fn kurir_beside_me() -> Result<PathBuf, AliasError> {
    let me = std::env::current_exe().map_err(AliasError::OwnPath)?;
    Ok(me.with_file_name("kurir"))
}

/// The arguments for `kurir`: this process's, without the program name and the
/// `--standalone` switch (`kurir` is always a development node).
pub fn kurir_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .skip(1)
        .filter(|a| a != "--standalone")
        .collect()
}

/// Print [`NOTE`] and replace this process with `kurir`; returns only on failure.
///
/// # Errors
/// There is no `kurir` beside this executable, or it cannot be run.
pub fn exec_kurir() -> AliasError {
    let path = match kurir_beside_me() {
        Ok(p) => p,
        Err(e) => return e,
    };
    if !path.is_file() {
        return AliasError::Missing(path);
    }
    eprintln!("kurir-dispatcher: {NOTE}; running {}", path.display());
    let source = std::process::Command::new(&path)
        .args(kurir_args(std::env::args_os()))
        .exec();
    AliasError::Exec { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_is_dropped_and_every_other_argument_kept() {
        let args = [
            "kurir-dispatcher",
            "--grpc-listen",
            "0.0.0.0:1",
            "--standalone",
            "--demo-interval",
            "5s",
        ]
        .map(OsString::from);
        assert_eq!(
            kurir_args(args),
            ["--grpc-listen", "0.0.0.0:1", "--demo-interval", "5s"].map(OsString::from)
        );
    }

    #[test]
    fn kurir_is_looked_for_beside_this_executable() {
        let path = kurir_beside_me().unwrap();
        assert_eq!(path.file_name().unwrap(), "kurir");
        assert_eq!(path.parent(), std::env::current_exe().unwrap().parent());
    }
}
