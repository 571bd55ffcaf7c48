//! What every Kurir binary does with a command line it refuses: one line on stderr and
//! exit code 64 (`EX_USAGE`), instead of clap's usage text.

/// `EX_USAGE`: bad flags, environment or configuration.
pub const EX_USAGE: u8 = 64;
/// `EX_UNAVAILABLE`: a port could not be bound, or a needed program is missing.
pub const EX_UNAVAILABLE: u8 = 69;

/// A clap error as one line: the message and its details (e.g. which arguments are
/// missing), without the usage text and tips.
#[must_use]
pub fn one_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let line = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect::<Vec<_>>()
        .join(" ");
    match line.strip_prefix("error: ") {
        Some(rest) => rest.to_owned(),
        None if line.is_empty() => "invalid arguments".to_owned(),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long)]
        port: u16,
        #[arg(long, required = true)]
        name: String,
    }

    #[test]
    fn errors_become_one_line_without_usage() {
        let err = Cli::try_parse_from(["x", "--port", "nope", "--name", "a"]).unwrap_err();
        let line = one_line(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--port"), "{line}");
        let err = Cli::try_parse_from(["x", "--port", "1"]).unwrap_err();
        let line = one_line(&err);
        assert!(line.contains("--name"), "{line}");
        assert!(!line.contains("Usage"), "{line}");
    }
}
