//! The command line: `kurir` alone (or `kurir dev`) runs a development node; the
//! subcommands talk to a running dispatcher or mint a client token.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::client::args::{DisconnectArgs, PresenceArgs, ReceiptsArgs, SendArgs};
use crate::token::TokenArgs;
use crate::vapid::VapidArgs;

/// `kurir`: with no subcommand, a development node; with one, a client.
#[derive(Debug, Parser)]
#[command(
    name = "kurir",
    version,
    about = "Kurir push notifications: a development node in one process, and clients for a cluster",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The development node's settings, when no subcommand is given.
    #[command(flatten)]
    pub dev: DevArgs,
}

/// The development node's settings: the dispatcher's flags and `KURIR_*` variables
/// (the embedded gateway reads its own variables, `KURIR_LISTEN`, `KURIR_JWT_*`…).
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub config: kurir_dispatcher::Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Kurir in this one process for development (the default): in-memory backends,
    /// the gRPC API, a gateway with the demo page, printed development credentials.
    Dev(Box<DevArgs>),
    /// Send a notification to users (Send), a topic (Publish) or everyone (Broadcast);
    /// prints the reply as one JSON line.
    Send(SendArgs),
    /// Print users' presence (GetPresence) as one JSON line.
    Presence(PresenceArgs),
    /// Follow receipts (WatchReceipts) as JSON lines until interrupted.
    Receipts(ReceiptsArgs),
    /// Close every connection of a user (Disconnect); prints how many were reached.
    Disconnect(DisconnectArgs),
    /// Print a client JWT for the gateway, alone on one line.
    Token(TokenArgs),
    /// Print a new VAPID key pair for Web Push: KURIR_VAPID_PRIVATE_KEY for the
    /// dispatchers, the public key for the browsers.
    Vapid(VapidArgs),
}

/// The dispatcher's `--standalone` switch means nothing here (this is always a
/// development node): kept working, hidden from help.
const HIDDEN_SERVER_FLAGS: [&str; 1] = ["standalone"];

/// The clap command, with flags that make no sense for `kurir` hidden.
pub fn command() -> clap::Command {
    let hide = |mut cmd: clap::Command| {
        for id in HIDDEN_SERVER_FLAGS {
            cmd = cmd.mut_arg(id, |a| a.hide(true));
        }
        cmd
    };
    hide(Cli::command()).mut_subcommand("dev", hide)
}

/// Parse `args` (the program name first).
///
/// # Errors
/// Bad flags or environment values, or `--help` / `--version`.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches)
}

impl Cli {
    /// What to run: a subcommand, or the development node with the top-level flags.
    pub fn into_command(self) -> Command {
        self.command
            .unwrap_or_else(|| Command::Dev(Box::new(self.dev)))
    }
}

#[cfg(test)]
mod tests;
