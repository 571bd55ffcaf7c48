//! Retries, `Retry-After`, the circuit breaker and provider isolation.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use common::{p256_key, policy, serve, webpush_client, webpush_device};
use kurir_push::apns::token::ProviderToken;
use kurir_push::apns::ApnsClient;
use kurir_push::outcome::{Failure, FailureReason};
use kurir_push::retry::RetryPolicy;
use kurir_push::{Device, Outcome, Provider, PushMessage, Pusher};
use p256::pkcs8::{EncodePrivateKey, LineEnding};

/// One scripted answer: status, `Retry-After` seconds, delay before answering.
type Answer = (StatusCode, Option<u64>, Duration);

struct Script {
    answers: Mutex<VecDeque<Answer>>,
    otherwise: Answer,
    arrivals: Mutex<Vec<Instant>>,
}

/// A push service that answers from `answers`, then `otherwise`, and notes arrivals.
async fn scripted(answers: Vec<Answer>, otherwise: Answer) -> (String, Arc<Script>) {
    let script = Arc::new(Script {
        answers: Mutex::new(answers.into()),
        otherwise,
        arrivals: Mutex::default(),
    });
    let state = Arc::clone(&script);
    let handler = move || async move {
        state.arrivals.lock().unwrap().push(Instant::now());
        let next = state.answers.lock().unwrap().pop_front();
        let (status, retry_after, delay) = next.unwrap_or(state.otherwise);
        tokio::time::sleep(delay).await;
        let mut response = status.into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert("retry-after", seconds.into());
        }
        response
    };
    let router = Router::new()
        .route("/push/{id}", post(handler.clone()))
        .route("/3/device/{id}", post(handler));
    (format!("http://{}", serve(router).await), script)
}

const OK: Answer = (StatusCode::CREATED, None, Duration::ZERO);

fn message() -> PushMessage {
    PushMessage::new("n", "t", "b")
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let (origin, script) = scripted(
        vec![(StatusCode::TOO_MANY_REQUESTS, Some(1), Duration::ZERO)],
        OK,
    )
    .await;
    let pusher = Pusher::new(policy(3, 5)).with_webpush(webpush_client(&origin));
    let outcome = pusher
        .send(&webpush_device(format!("{origin}/push/1")), &message())
        .await;
    assert_eq!(outcome, Outcome::Sent { id: None });
    let arrivals = script.arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), 2);
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_secs(1),
        "retried after {:?}",
        arrivals[1] - arrivals[0]
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_goes_back_to_the_caller() {
    let (origin, script) = scripted(
        vec![],
        (StatusCode::TOO_MANY_REQUESTS, Some(120), Duration::ZERO),
    )
    .await;
    let pusher = Pusher::new(policy(3, 5)).with_webpush(webpush_client(&origin));
    let outcome = pusher
        .send(&webpush_device(format!("{origin}/push/1")), &message())
        .await;
    let Outcome::Failed(failure) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(failure.retryable);
    assert_eq!(failure.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(script.arrivals.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let (origin, script) = scripted(
        vec![(StatusCode::SERVICE_UNAVAILABLE, None, Duration::ZERO)],
        OK,
    )
    .await;
    let pusher = Pusher::new(policy(3, 5)).with_webpush(webpush_client(&origin));
    assert_eq!(
        pusher
            .send(&webpush_device(format!("{origin}/push/1")), &message())
            .await,
        Outcome::Sent { id: None }
    );
    assert_eq!(script.arrivals.lock().unwrap().len(), 2);

    let (origin, script) = scripted(vec![], (StatusCode::BAD_REQUEST, None, Duration::ZERO)).await;
    let pusher = Pusher::new(policy(3, 5)).with_webpush(webpush_client(&origin));
    let outcome = pusher
        .send(&webpush_device(format!("{origin}/push/1")), &message())
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed(Failure {
                retryable: false,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(script.arrivals.lock().unwrap().len(), 1);
}

fn apns_client(endpoint: &str) -> ApnsClient {
    let pem = p256_key().to_pkcs8_pem(LineEnding::LF).unwrap();
    let token = ProviderToken::new(&pem, "KEY1234567", "TEAM123456").unwrap();
    ApnsClient::new(token, endpoint, "com.example.kurir", Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_other_providers_still_send() {
    let (failing, script) = scripted(
        vec![],
        (StatusCode::SERVICE_UNAVAILABLE, None, Duration::ZERO),
    )
    .await;
    let (healthy, _) = scripted(vec![], (StatusCode::OK, None, Duration::ZERO)).await;
    let pusher = Pusher::new(policy(1, 3))
        .with_webpush(webpush_client(&failing))
        .with_apns(apns_client(&healthy));
    let device = webpush_device(format!("{failing}/push/1"));
    for _ in 0..3 {
        let outcome = pusher.send(&device, &message()).await;
        assert!(
            matches!(&outcome, Outcome::Failed(f) if matches!(f.reason, FailureReason::Rejected { status: 503, .. })),
            "{outcome:?}"
        );
    }
    assert!(pusher.guard(Provider::WebPush).unwrap().breaker().is_open());
    let outcome = pusher.send(&device, &message()).await;
    let Outcome::Failed(failure) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(failure.reason, FailureReason::CircuitOpen);
    assert!(
        failure.retryable
            && failure
                .retry_after
                .is_some_and(|d| d <= Duration::from_secs(60))
    );
    assert_eq!(
        script.arrivals.lock().unwrap().len(),
        3,
        "an open circuit sends nothing"
    );

    let outcome = pusher
        .send(
            &Device::Apns {
                token: "abcd".into(),
                topic: None,
            },
            &message(),
        )
        .await;
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    assert!(!pusher.guard(Provider::Apns).unwrap().breaker().is_open());
}

#[tokio::test]
async fn a_slow_provider_does_not_hold_up_another() {
    let (slow, _) = scripted(vec![], (StatusCode::OK, None, Duration::from_secs(30))).await;
    let (fast, _) = scripted(vec![], OK).await;
    let mut limits = policy(1, 3);
    limits.timeout = Duration::from_millis(300);
    limits.concurrency = 1;
    let pusher = Arc::new(
        Pusher::new(limits)
            .with_webpush(webpush_client(&fast))
            .with_apns(apns_client(&slow)),
    );
    let stuck = {
        let pusher = Arc::clone(&pusher);
        tokio::spawn(async move {
            pusher
                .send(
                    &Device::Apns {
                        token: "abcd".into(),
                        topic: None,
                    },
                    &message(),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let outcome = pusher
        .send(&webpush_device(format!("{fast}/push/1")), &message())
        .await;
    assert_eq!(outcome, Outcome::Sent { id: None });
    assert!(started.elapsed() < Duration::from_millis(250));
    let timed_out = stuck.await.unwrap();
    assert!(
        matches!(timed_out, Outcome::Failed(f) if f.retryable && matches!(f.reason, FailureReason::Transport(_)))
    );
}

#[test]
fn backoff_grows_stays_bounded_and_honours_retry_after() {
    let policy = RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        budget: Duration::from_secs(10),
    };
    let transient = Failure::transient(FailureReason::Transport("connect".into()), None);
    for attempt in 1..5 {
        let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_millis(400));
        let delay = policy
            .next_delay(attempt, Duration::ZERO, &transient)
            .unwrap();
        assert!(
            delay >= cap / 2 && delay <= cap,
            "attempt {attempt}: {delay:?}"
        );
    }
    assert_eq!(
        policy.next_delay(5, Duration::ZERO, &transient),
        None,
        "attempts are bounded"
    );
    assert_eq!(
        policy.next_delay(1, Duration::from_secs(10), &transient),
        None,
        "time is bounded"
    );
    let throttled = Failure::transient(
        FailureReason::Rejected {
            status: 429,
            reason: "slow down".into(),
        },
        Some(Duration::from_secs(3)),
    );
    assert!(policy.next_delay(1, Duration::ZERO, &throttled).unwrap() >= Duration::from_secs(3));
    let permanent = Failure::permanent(FailureReason::Rejected {
        status: 400,
        reason: "bad".into(),
    });
    assert_eq!(policy.next_delay(1, Duration::ZERO, &permanent), None);
}

#[tokio::test]
async fn a_push_whose_failures_open_the_circuit_keeps_the_providers_reason() {
    let (origin, script) = scripted(vec![], (StatusCode::BAD_GATEWAY, None, Duration::ZERO)).await;
    let pusher = Pusher::new(policy(5, 2)).with_webpush(webpush_client(&origin));
    let outcome = pusher
        .send(&webpush_device(format!("{origin}/push/1")), &message())
        .await;
    let Outcome::Failed(failure) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        matches!(failure.reason, FailureReason::Rejected { status: 502, .. }),
        "{failure:?}"
    );
    assert!(failure.retryable);
    assert!(
        failure
            .retry_after
            .is_some_and(|d| d > Duration::from_secs(30)),
        "not before the circuit's pause"
    );
    assert_eq!(
        script.arrivals.lock().unwrap().len(),
        2,
        "the open circuit stopped the retries"
    );
}
