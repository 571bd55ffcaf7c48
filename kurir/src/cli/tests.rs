//! The command line's shape: targets, conflicts, defaults and one-line errors.

use super::*;
use kurir_runtime::cli::one_line;

fn parse(args: &[&str]) -> Result<Command, clap::Error> {
    parse_from(std::iter::once("kurir").chain(args.iter().copied())).map(Cli::into_command)
}

#[test]
fn clap_definition_is_consistent() {
    command().debug_assert();
}

#[test]
fn no_subcommand_is_the_development_node_with_its_flags() {
    let Command::Dev(dev) = parse(&["--grpc-listen", "0.0.0.0:7000"]).unwrap() else {
        panic!("not dev")
    };
    assert_eq!(dev.config.grpc_listen.port(), 7000);
    let Command::Dev(dev) = parse(&["dev", "--demo-interval", "5s"]).unwrap() else {
        panic!("not dev")
    };
    assert_eq!(
        dev.config.demo_interval,
        Some(std::time::Duration::from_secs(5))
    );
    // Server flags belong to the node, not to the clients.
    assert!(parse(&["--grpc-listen", "0.0.0.0:7000", "presence", "--user", "a"]).is_err());
    let help = command().render_long_help().to_string();
    assert!(!help.contains("--standalone"), "{help}");
}

#[test]
fn send_targets_are_exclusive() {
    let Command::Send(send) =
        parse(&["send", "--user", "a", "--user", "b", "--title", "t"]).unwrap()
    else {
        panic!("not send")
    };
    assert_eq!(send.target.users, ["a", "b"]);
    assert_eq!(send.ttl, 3600);
    assert!(parse(&["send", "--user", "a", "--topic", "x", "--title", "t"]).is_err());
    assert!(parse(&["send", "--title", "t"]).is_err());
    assert!(parse(&["send", "--topic", "x", "--ttl", "5", "--title", "t"]).is_err());
    assert!(parse(&["send", "--broadcast", "--data", "novalue", "--title", "t"]).is_err());
    let Command::Send(send) =
        parse(&["send", "--broadcast", "--data", "k=v=w", "--title", "t"]).unwrap()
    else {
        panic!("not send")
    };
    assert_eq!(send.data, [("k".to_owned(), "v=w".to_owned())]);
}

#[test]
fn a_client_certificate_needs_its_key() {
    assert!(parse(&["presence", "--user", "a", "--client-cert", "c.pem"]).is_err());
    assert!(parse(&[
        "presence",
        "--user",
        "a",
        "--client-cert",
        "c.pem",
        "--client-key",
        "k.pem"
    ])
    .is_ok());
}

#[test]
fn disconnect_names_one_user() {
    let Command::Disconnect(d) =
        parse(&["disconnect", "--user", "alice", "--reason", "bye"]).unwrap()
    else {
        panic!("not disconnect")
    };
    assert_eq!((d.user.as_str(), d.reason.as_str()), ("alice", "bye"));
    assert!(parse(&["disconnect"]).is_err());
}

#[test]
fn token_takes_topics_comma_separated_and_a_kid_only_with_a_key_file() {
    let Command::Token(t) = parse(&["token", "--user", "alice", "--topics", "a,b.*"]).unwrap()
    else {
        panic!("not token")
    };
    assert_eq!(t.topics, ["a", "b.*"]);
    assert_eq!(t.ttl, crate::token::DEFAULT_TTL_SECONDS);
    assert!(parse(&["token", "--user", "alice", "--kid", "k1"]).is_err());
    assert!(parse(&["token", "--topics", "a"]).is_err());
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
