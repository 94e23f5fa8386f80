//! A worker comes back within a few seconds of its master after an outage
//! (issue 18 point 3): while nobody listens, its backoff stays at a few
//! seconds instead of growing to a minute. Long (an outage of 22 s), so
//! `#[ignore]`d and run by scripts/reliability.

use crate::common::{wait_for, Setup, PASSING_TEST, WORKER_PW};
use minibot::worker::status::{self, State};
use std::time::{Duration, Instant};

#[test]
#[ignore = "long; run by scripts/reliability"]
fn a_worker_is_back_within_seconds_of_a_master_restarted_after_an_outage() {
    let s = Setup::new(PASSING_TEST, "");
    let master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    let dir = s.tmp.path().join("example-worker");
    let state = || status::read(&dir).map(|st| st.state);
    wait_for("the worker connected", Duration::from_secs(30), || {
        (state()? == State::Connected).then_some(())
    });
    master.signal(libc::SIGKILL);
    drop(master);
    let down = Instant::now();
    wait_for("the worker noticed", Duration::from_secs(10), || {
        (state()? == State::Unreachable).then_some(())
    });
    // With the old backoff (1, 2, 4, 8, 16 s ±25 %) the worker made at most
    // five attempts in 22 s; capped at ~4 s it makes at least six.
    std::thread::sleep(Duration::from_secs(22).saturating_sub(down.elapsed()));
    let st = status::read(&dir).unwrap();
    assert_eq!(st.state, State::Unreachable, "{st:?}");
    assert!(
        st.failures >= 6,
        "attempts while the master was down: {st:?}"
    );
    let last_error = st.last_error.clone().unwrap_or_default();
    assert!(last_error.contains("could not connect"), "{st:?}");
    let _master = s.start_master();
    let ready = Instant::now();
    wait_for("the worker back", Duration::from_secs(30), || {
        (state()? == State::Connected).then_some(())
    });
    let back = ready.elapsed();
    eprintln!(
        "master down {:?}: {} failed attempts; worker connected {back:?} after the master was ready",
        ready - down,
        st.failures
    );
    assert!(back < Duration::from_secs(6), "{back:?}");
    s.wait_connected("example-worker");
}
