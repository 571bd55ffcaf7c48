//! The push settings and building the providers from them.

use clap::Parser;
use kurir_push::settings::{SettingsError, DEFAULT_PUSH_CONCURRENCY};
use kurir_push::{Device, FailureReason, Outcome, PushMessage, PushSettings, Pusher, PusherError};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    push: PushSettings,
}

#[test]
fn the_defaults_configure_no_provider_and_are_valid() {
    let settings = PushSettings::for_test();
    settings.validate().expect("valid");
    assert_eq!(settings.push_concurrency, DEFAULT_PUSH_CONCURRENCY);
}

#[tokio::test]
async fn an_unconfigured_provider_fails_permanently() {
    let pusher = Pusher::from_settings(&PushSettings::for_test()).expect("pusher");
    assert_eq!(pusher.vapid_public_key(), None);
    let outcome = pusher
        .send(
            &Device::Fcm { token: "t".into() },
            &PushMessage::new("n", "t", "b"),
        )
        .await;
    assert!(
        matches!(outcome, Outcome::Failed(f) if !f.retryable && matches!(f.reason, FailureReason::NotConfigured(_)))
    );
}

#[test]
fn the_command_line_configures_web_push_and_hides_the_key() {
    let key = "IQ9Ur0ykXoHS9gzfYX0aBjy9lvdrjx_PFUXmie9YRcY";
    let cli = Cli::try_parse_from([
        "kurir",
        "--vapid-private-key",
        key,
        "--vapid-subject",
        "mailto:ops@kurir.example",
    ])
    .unwrap();
    assert!(!format!("{:?}", cli.push).contains(key));
    let pusher = Pusher::from_settings(&cli.push).expect("pusher");
    let public = pusher.vapid_public_key().expect("web push configured");
    assert_eq!(public.len(), 87, "base64url of a 65-byte point");
}

#[test]
fn half_configured_providers_and_bad_values_are_refused() {
    let mut settings = PushSettings::for_test();
    settings.vapid_private_key = Some(kurir_push::secret::Secret::new("x"));
    assert!(matches!(
        settings.validate(),
        Err(SettingsError::Incomplete {
            missing: "KURIR_VAPID_SUBJECT",
            ..
        })
    ));
    settings.vapid_subject = Some("ops@kurir.example".into());
    assert!(matches!(
        Pusher::from_settings(&settings),
        Err(PusherError::Vapid(_))
    ));

    let mut settings = PushSettings::for_test();
    settings.apns_key_file = Some("/nonexistent.p8".into());
    assert!(matches!(
        settings.validate(),
        Err(SettingsError::Incomplete {
            missing: "KURIR_APNS_KEY_ID",
            ..
        })
    ));

    let mut settings = PushSettings::for_test();
    settings.webpush_allowed_origins = "fcm.googleapis.com".into();
    assert!(matches!(
        settings.validate(),
        Err(SettingsError::Origins(_))
    ));

    let mut settings = PushSettings::for_test();
    settings.push_concurrency = 0;
    assert!(matches!(
        settings.validate(),
        Err(SettingsError::Zero("KURIR_PUSH_CONCURRENCY"))
    ));

    let mut settings = PushSettings::for_test();
    settings.fcm_service_account = Some("/nonexistent.json".into());
    assert!(matches!(
        Pusher::from_settings(&settings),
        Err(PusherError::Read { .. })
    ));
}
