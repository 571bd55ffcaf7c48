//! The circuit breaker's states.

use std::time::Duration;

use kurir_push::breaker::{Admission, BreakerPolicy, CircuitBreaker};

fn breaker(open_for: Duration) -> CircuitBreaker {
    CircuitBreaker::new(BreakerPolicy {
        failure_threshold: 2,
        open_for,
    })
}

#[test]
fn consecutive_failures_open_it_and_a_success_resets_the_count() {
    let breaker = breaker(Duration::from_secs(60));
    assert!(!breaker.record_failure());
    breaker.record_success();
    assert!(!breaker.record_failure());
    assert_eq!(breaker.admit(), Admission::Allowed);
    assert!(
        breaker.record_failure(),
        "the second failure in a row opens"
    );
    assert!(breaker.is_open());
    assert!(
        matches!(breaker.admit(), Admission::Refused { retry_in } if retry_in <= Duration::from_secs(60))
    );
}

#[test]
fn after_the_pause_one_probe_decides() {
    let breaker = breaker(Duration::from_millis(50));
    breaker.record_failure();
    breaker.record_failure();
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(breaker.admit(), Admission::Allowed, "the probe");
    assert!(
        matches!(breaker.admit(), Admission::Refused { .. }),
        "one probe at a time"
    );
    assert!(breaker.record_failure(), "a failed probe opens again");
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(breaker.admit(), Admission::Allowed);
    breaker.record_success();
    assert_eq!(breaker.admit(), Admission::Allowed);
    assert_eq!(breaker.admit(), Admission::Allowed, "closed again");
}

#[test]
fn a_probe_that_never_reports_does_not_wedge_the_circuit() {
    let breaker = breaker(Duration::from_millis(50));
    breaker.record_failure();
    breaker.record_failure();
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(
        breaker.admit(),
        Admission::Allowed,
        "a probe whose caller gives up"
    );
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(
        breaker.admit(),
        Admission::Allowed,
        "another probe after a pause"
    );
}
