//! The command line: the server's [`Config`] (flags and `KURIR_*` environment variables:
//! [`server`] declares them, [`check`] refuses what the dispatcher cannot start with,
//! before any port is bound) and the client subcommands (`send`, `presence`, `receipts`)
//! that [`crate::client`] runs against a dispatcher.

mod check;
mod server;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use check::ConfigError;
pub use server::*;

pub use kurir_backends::{Secret, ServerUrl};

/// `kurir-dispatcher`: with no subcommand, the gRPC server; with one, a small client.
#[derive(Debug, Parser)]
#[command(
    name = "kurir-dispatcher",
    version,
    about = "Kurir gRPC dispatcher: validates, stores and routes notifications to gateways"
)]
pub struct Cli {
    /// Run a client command against a dispatcher instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: Config,
}

/// A clap error as the one line `main` prints before exiting with `EX_USAGE`: the
/// message and its details (e.g. which arguments are missing), without the usage text.
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

/// Client commands, for people without `grpcurl`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a notification to users (Send), a topic (Publish) or everyone (Broadcast);
    /// prints the reply as one JSON line.
    Send(SendArgs),
    /// Print users' presence (GetPresence) as one JSON line.
    Presence(PresenceArgs),
    /// Follow receipts (WatchReceipts) as JSON lines until interrupted.
    Receipts(ReceiptsArgs),
}

/// How a client command reaches the dispatcher.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Dispatcher gRPC endpoint.
    #[arg(long, env = "KURIR_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,

    /// API key, sent as `authorization: Bearer <key>`.
    #[arg(long, env = "KURIR_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// PEM CA certificate(s) trusted for an `https://` endpoint (default: the system's
    /// roots).
    #[arg(long, env = "KURIR_TLS_CA")]
    pub ca_file: Option<PathBuf>,

    /// PEM client certificate for mTLS (with `--client-key`).
    #[arg(long, env = "KURIR_TLS_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of `--client-cert`.
    #[arg(long, env = "KURIR_TLS_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    #[command(flatten)]
    pub target: Target,

    /// Notification title.
    #[arg(long, default_value = "")]
    pub title: String,

    /// Notification body.
    #[arg(long, default_value = "")]
    pub body: String,

    /// Data entry for the app, repeatable.
    #[arg(long = "data", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub data: Vec<(String, String)>,

    /// Delivery priority.
    #[arg(long, value_enum, default_value_t = PriorityArg::Normal)]
    pub priority: PriorityArg,

    /// Clients may replace an earlier notification with the same collapse key.
    #[arg(long, default_value = "")]
    pub collapse_key: String,

    /// Seconds the notification stays in the users' inboxes; 0 = live only. `--user` only.
    #[arg(long, default_value_t = 3600, conflicts_with_all = ["topic", "broadcast"])]
    pub ttl: u32,

    /// Retrying with the same key within 24 h returns the first id. `--user` only.
    #[arg(long, conflicts_with_all = ["topic", "broadcast"])]
    pub idempotency_key: Option<String>,
}

/// Who a `send` goes to: exactly one of `--user` (repeatable), `--topic`, `--broadcast`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// Recipient user id (Send), repeatable.
    #[arg(long = "user", value_name = "USER_ID")]
    pub users: Vec<String>,

    /// Topic to publish to (Publish).
    #[arg(long)]
    pub topic: Option<String>,

    /// Every live connection of the cluster (Broadcast).
    #[arg(long)]
    pub broadcast: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorityArg {
    Normal,
    High,
}

#[derive(Debug, Args)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// User id to look up, repeatable.
    #[arg(long = "user", value_name = "USER_ID", required = true)]
    pub users: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReceiptsArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Only receipts of this user, repeatable; none = all users.
    #[arg(long = "user", value_name = "USER_ID")]
    pub users: Vec<String>,

    /// Only receipts of this notification id, repeatable; none = all notifications.
    #[arg(long = "id", value_name = "NOTIFICATION_ID")]
    pub ids: Vec<String>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kurir-dispatcher").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_certificates_need_their_key() {
        assert!(parse(&["presence", "--user", "a", "--client-cert", "c.pem"]).is_err());
    }

    #[test]
    fn send_targets_are_exclusive() {
        let cli = parse(&["send", "--user", "a", "--user", "b", "--title", "t"]).unwrap();
        let Some(Command::Send(send)) = cli.command else {
            panic!("not send")
        };
        assert_eq!(send.target.users, ["a", "b"]);
        assert_eq!(send.ttl, 3600);
        assert!(parse(&["send", "--user", "a", "--topic", "x", "--title", "t"]).is_err());
        assert!(parse(&["send", "--title", "t"]).is_err());
        assert!(parse(&["send", "--topic", "x", "--ttl", "5", "--title", "t"]).is_err());
        assert!(parse(&["send", "--broadcast", "--data", "novalue", "--title", "t"]).is_err());
        let cli = parse(&["send", "--broadcast", "--data", "k=v=w", "--title", "t"]).unwrap();
        let Some(Command::Send(send)) = cli.command else {
            panic!("not send")
        };
        assert_eq!(send.data, [("k".to_owned(), "v=w".to_owned())]);
    }

    #[test]
    fn bad_values_become_one_line() {
        let err = parse(&["--grpc-listen", "nope"]).unwrap_err();
        let line = one_line(&err);
        assert!(!line.contains('\n'));
        assert!(line.contains("grpc-listen"), "{line}");

        let err = parse(&["send", "--title", "t"]).unwrap_err();
        let line = one_line(&err);
        assert!(!line.contains('\n'));
        assert!(line.contains("--broadcast"), "{line}");
        assert!(!line.contains("Usage"), "{line}");
    }
}
