//! The client commands' flags: where the dispatcher is and what to ask it.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kurir_backends::Secret;

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

    /// Send at this time (unix milliseconds, at most 30 days ahead) instead of now; the
    /// reply's id can be cancelled until then (CancelScheduled).
    #[arg(long, value_name = "UNIX_MS")]
    pub send_at: Option<i64>,

    /// Push to the users' registered devices if still unacked after this many
    /// milliseconds (0 = at once to users with no live connection). `--user` only.
    #[arg(long, value_name = "MS", conflicts_with_all = ["topic", "broadcast"])]
    pub fallback_after_ms: Option<u32>,
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

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// The user whose connections are closed (close code 4001), on every gateway.
    #[arg(long = "user", value_name = "USER_ID")]
    pub user: String,

    /// Close reason the clients see (at most 120 bytes are sent).
    #[arg(long, default_value = "")]
    pub reason: String,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}
