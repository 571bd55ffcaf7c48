//! `redis-cli` against a URL: for a test to read or bend what a Redis holds without a
//! client library (and exactly as an operator would).

use std::io::Write as _;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum RedisCliError {
    #[error("running redis-cli: {0}")]
    Run(#[from] std::io::Error),
    #[error("redis-cli {args}: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("redis-cli stdin writer panicked")]
    Writer,
}

/// Run `redis-cli -u url args…`; its stdout, trimmed.
pub fn redis_cli(url: &str, args: &[&str]) -> Result<String, RedisCliError> {
    let out = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(RedisCliError::Failed {
            args: format!("{args:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Run one command per line of `commands` in a single `redis-cli` (quote arguments
/// with [`redis_quote`]); one output line per command.
pub fn redis_cli_batch(url: &str, commands: &[String]) -> Result<Vec<String>, RedisCliError> {
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let input = commands.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer.join().map_err(|_| RedisCliError::Writer)??;
    if !out.status.success() {
        return Err(RedisCliError::Failed {
            args: "(batch)".into(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// `arg` as one redis-cli argument, whatever it contains.
pub fn redis_quote(arg: &str) -> String {
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// Keys matching `pattern` (`--scan`, never `KEYS`).
pub fn scan(url: &str, pattern: &str) -> Result<Vec<String>, RedisCliError> {
    Ok(redis_cli(url, &["--scan", "--pattern", pattern])?
        .lines()
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect())
}

/// Delete a namespace's keys, `kurir:<namespace>:*` (never anything else); best effort.
pub fn cleanup_namespace(url: &str, namespace: &str) {
    if let Ok(keys) = scan(url, &format!("kurir:{namespace}:*")) {
        let commands: Vec<String> = keys
            .iter()
            .map(|k| format!("DEL {}", redis_quote(k)))
            .collect();
        let _ = redis_cli_batch(url, &commands);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_anything_into_one_argument() {
        assert_eq!(redis_quote("a b"), "\"a b\"");
        assert_eq!(redis_quote("q\"uo\\te"), "\"q\\\"uo\\\\te\"");
        assert_eq!(redis_quote("\u{e9}\t"), "\"\\xc3\\xa9\\x09\"");
    }
}
