//! `kurir vapid`: a fresh VAPID key pair for Web Push. The private key goes to the
//! dispatchers (`KURIR_VAPID_PRIVATE_KEY`), the public one to the browsers
//! (`PushManager.subscribe({ applicationServerKey })`). Printed on stdout only: the
//! private key is a credential, so put it where secrets go, not in a log.

use std::io::Write as _;

use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub struct VapidArgs {
    /// One JSON object (`private_key`, `public_key`) instead of environment lines.
    #[arg(long)]
    pub json: bool,
}

/// Print a new key pair.
///
/// # Errors
/// Stdout cannot be written.
pub fn run(args: &VapidArgs) -> std::io::Result<()> {
    let (private, public) = kurir_push::webpush::vapid::generate_key_pair();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({ "private_key": private, "public_key": public })
        )
    } else {
        writeln!(
            out,
            "# The browsers' applicationServerKey (public):\n# {public}\nKURIR_VAPID_PRIVATE_KEY={private}"
        )
    }
}
