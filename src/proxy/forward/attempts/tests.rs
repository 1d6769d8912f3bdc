//! The attempt loop under paused time, against scripted regions: per-try
//! timeout, backoff, `Retry-After`, budget, attempts and the first answer.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

use super::*;
use crate::upstream::body::BodyWatch;

/// What a scripted region does with one attempt.
#[derive(Clone, Copy)]
enum Step {
    /// Answers this status, with `Retry-After` when given.
    Answer(u16, Option<&'static str>),
    Fail(UpstreamFailure),
    /// Never answers.
    Hang,
    /// Answers this status 100 ms after the client's body is complete.
    AnswerOnceBodyIn(u16),
    /// No connection slot comes free: the reservation waits 5 s, then fails.
    Busy,
}

struct Script {
    steps: Mutex<VecDeque<Step>>,
    /// Region, attempt number and time since the start of each attempt.
    sent: Mutex<Vec<(Region, u32, Duration)>>,
    outcomes: Mutex<Vec<(Region, Outcome)>>,
    snapshot: Arc<Snapshot>,
    start: Instant,
    /// The client's body (complete unless a test says otherwise).
    body: Arc<BodyWatch>,
}

impl Script {
    fn new(steps: &[Step]) -> Script {
        Script {
            steps: Mutex::new(steps.iter().copied().collect()),
            sent: Mutex::default(),
            outcomes: Mutex::default(),
            snapshot: Arc::new(Snapshot::initial(SystemTime::UNIX_EPOCH)),
            start: Instant::now(),
            body: complete_body(),
        }
    }

    /// The client's body trickles in until `complete_after` (never with
    /// `None`).
    fn with_slow_body(mut self, complete_after: Option<Duration>) -> Script {
        let body = Arc::new(BodyWatch::default());
        body.set_waiting_on_client(true);
        if let Some(after) = complete_after {
            let b = body.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                b.mark_complete();
            });
        }
        self.body = body;
        self
    }

    fn sent(&self) -> Vec<(Region, u32, Duration)> {
        self.sent.lock().unwrap().clone()
    }

    fn regions(&self) -> Vec<Region> {
        self.sent().into_iter().map(|(r, _, _)| r).collect()
    }
}

impl Upstreams for Script {
    type Body = &'static str;
    type Ticket = ();

    async fn reserve(&self, _region: Region, deadline: Instant) -> Result<(), AttemptError> {
        let busy = {
            let mut steps = self.steps.lock().unwrap();
            let busy = matches!(steps.front(), Some(Step::Busy));
            if busy {
                steps.pop_front();
            }
            busy
        };
        if busy {
            tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_secs(5))).await;
            return Err(AttemptError::Upstream(UpstreamFailure::Busy));
        }
        Ok(())
    }

    async fn send(
        &self,
        region: Region,
        attempt: u32,
        _body: RequestBody,
        (): (),
    ) -> Result<Response<&'static str>, AttemptError> {
        self.sent
            .lock()
            .unwrap()
            .push((region, attempt, self.start.elapsed()));
        let step = self.steps.lock().unwrap().pop_front().unwrap_or(Step::Hang);
        match step {
            Step::Answer(status, retry_after) => {
                let mut b = Response::builder().status(status);
                if let Some(v) = retry_after {
                    b = b.header(header::RETRY_AFTER, v);
                }
                Ok(b.body(region.as_str()).unwrap())
            }
            Step::Fail(kind) => Err(AttemptError::Upstream(kind)),
            Step::Hang => std::future::pending().await,
            Step::Busy => unreachable!("taken by reserve"),
            Step::AnswerOnceBodyIn(status) => {
                self.body.completed().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(Response::builder().status(status).body("late").unwrap())
            }
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }

    fn record_outcome(&self, region: Region, outcome: Outcome) {
        self.outcomes.lock().unwrap().push((region, outcome));
    }

    fn body_failure(&self) -> Option<BodyFailure> {
        None
    }

    fn body_progress(&self) -> BodyProgress {
        self.body.progress()
    }

    async fn body_completed(&self) {
        self.body.completed().await;
    }
}

fn complete_body() -> Arc<BodyWatch> {
    let b = Arc::new(BodyWatch::default());
    b.mark_complete();
    b
}

struct Setup {
    class: Class,
    per_try: Duration,
    request_timeout: Duration,
    max_attempts: u32,
    max_retry_after: Duration,
    budget: RetryBudget,
    registry: prometheus::Registry,
    metrics: ProxyMetrics,
    backoff: Backoff,
}

impl Setup {
    fn new(class: Class) -> Setup {
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::register(&registry).unwrap();
        Setup {
            class,
            per_try: Duration::from_secs(10),
            request_timeout: Duration::from_secs(25),
            max_attempts: 3,
            max_retry_after: Duration::from_secs(5),
            budget: RetryBudget::new(0.2, 10),
            registry,
            metrics,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
        }
    }

    async fn run(&self, script: &Script) -> Result<(Response<&'static str>, Region), Refusal> {
        let plan = Plan {
            class: self.class,
            first: Region::Primary,
            deadline: Instant::now() + self.request_timeout,
            per_try_timeout: self.per_try,
            max_attempts: self.max_attempts,
            backoff: &self.backoff,
            max_retry_after: self.max_retry_after,
            max_body: 1 << 20,
            budget: &self.budget,
            metrics: &self.metrics,
        };
        let mut source = BodySource::Replayable(Bytes::from_static(b"{}"), None);
        let mut rng = fastrand::Rng::with_seed(7);
        run(script, &plan, &mut source, &mut rng).await
    }

    fn metric(&self, series: &str) -> String {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }
}

fn status(r: &Result<(Response<&'static str>, Region), Refusal>) -> (u16, Region) {
    match r {
        Ok((resp, region)) => (resp.status().as_u16(), *region),
        Err(_) => panic!("expected a response"),
    }
}

fn error(r: Result<(Response<&'static str>, Region), Refusal>) -> (ProxyError, bool) {
    match r {
        Err(Refusal::Error {
            error,
            outcome_unknown,
        }) => (error, outcome_unknown),
        Ok((resp, _)) => panic!("expected an error, got {}", resp.status()),
        Err(_) => panic!("expected an error refusal"),
    }
}

const P: Region = Region::Primary;
const R: Region = Region::Replica;

#[tokio::test(start_paused = true)]
async fn a_read_503_moves_to_the_other_region_after_a_jittered_backoff() {
    let s = Setup::new(Class::Read);
    let script = Script::new(&[Step::Answer(503, None), Step::Answer(200, None)]);
    let got = s.run(&script).await;
    assert_eq!(status(&got), (200, R));
    let sent = script.sent();
    assert_eq!(script.regions(), [P, R]);
    // The first retry waits at most backoff_base.
    assert!(sent[1].2 <= Duration::from_millis(50), "{sent:?}");
    assert_eq!(
        *script.outcomes.lock().unwrap(),
        [(P, Outcome::Status(503)), (R, Outcome::Status(200))]
    );
    assert_eq!(
        s.metric("failway_retries_total{reason=\"status_5xx\",region=\"replica\"}"),
        "1"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_read_is_cut_at_the_per_try_timeout_and_retried() {
    let mut s = Setup::new(Class::Read);
    s.per_try = Duration::from_secs(1);
    let script = Script::new(&[Step::Hang, Step::Answer(200, None)]);
    let got = s.run(&script).await;
    assert_eq!(status(&got), (200, R));
    let at = script.sent()[1].2;
    assert!(
        at >= Duration::from_secs(1) && at <= Duration::from_millis(1050),
        "second attempt at {at:?}"
    );
    assert_eq!(script.outcomes.lock().unwrap()[0], (P, Outcome::Timeout));
}

#[tokio::test(start_paused = true)]
async fn a_write_that_may_have_reached_the_server_is_never_sent_again() {
    for step in [Step::Hang, Step::Fail(UpstreamFailure::Reset)] {
        let mut s = Setup::new(Class::Write);
        s.per_try = Duration::from_secs(1);
        let script = Script::new(&[step, Step::Answer(201, None)]);
        let (error, unknown) = error(s.run(&script).await);
        assert!(unknown, "outcome unknown");
        assert!(
            matches!(
                error,
                ProxyError::UpstreamTimeout | ProxyError::UpstreamReset
            ),
            "{error:?}"
        );
        assert_eq!(script.sent().len(), 1, "sent once");
        assert_eq!(
            s.metric("failway_outcome_unknown_total{region=\"primary\"}"),
            "1"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_refused_at_connect_is_retried_in_the_same_region() {
    let s = Setup::new(Class::Write);
    let script = Script::new(&[
        Step::Fail(UpstreamFailure::ConnectRefused),
        Step::Answer(201, None),
    ]);
    assert_eq!(status(&s.run(&script).await), (201, P));
    assert_eq!(script.regions(), [P, P]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_for_in_the_same_region() {
    let s = Setup::new(Class::Read);
    let script = Script::new(&[Step::Answer(429, Some("2")), Step::Answer(200, None)]);
    assert_eq!(status(&s.run(&script).await), (200, P));
    let at = script.sent()[1].2;
    assert!(
        at >= Duration::from_secs(2) && at < Duration::from_millis(2100),
        "{at:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_above_the_maximum_is_passed_back_at_once() {
    let s = Setup::new(Class::Read);
    let script = Script::new(&[Step::Answer(429, Some("10")), Step::Answer(200, None)]);
    assert_eq!(status(&s.run(&script).await), (429, P));
    assert_eq!(script.sent().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_returns_the_original_error() {
    let mut s = Setup::new(Class::Read);
    s.budget = RetryBudget::new(0.0, 0);
    let script = Script::new(&[Step::Answer(503, None), Step::Answer(200, None)]);
    assert_eq!(status(&s.run(&script).await), (503, P));
    assert_eq!(script.sent().len(), 1);
    assert_eq!(s.metric("failway_retry_budget_exhausted_total"), "1");
}

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_a_failing_read() {
    let s = Setup::new(Class::Read);
    let script = Script::new(&[Step::Answer(503, None); 5]);
    assert_eq!(status(&s.run(&script).await), (503, P));
    // Out to the replica, back to the mode's region for the last one.
    assert_eq!(script.regions(), [P, R, P]);
}

#[tokio::test(start_paused = true)]
async fn the_first_regions_answer_wins_over_a_lagging_replica() {
    let s = Setup::new(Class::Read);
    let script = Script::new(&[Step::Answer(503, None), Step::Answer(404, None)]);
    let got = s.run(&script).await;
    assert_eq!(status(&got), (503, P));
    assert_eq!(got.unwrap().0.into_body(), "primary");
}

#[tokio::test(start_paused = true)]
async fn the_request_deadline_ends_a_hung_read_without_a_retry() {
    let mut s = Setup::new(Class::Read);
    s.request_timeout = Duration::from_secs(2);
    let script = Script::new(&[Step::Hang, Step::Answer(200, None)]);
    let started = Instant::now();
    let (error, unknown) = error(s.run(&script).await);
    assert_eq!((error, unknown), (ProxyError::RequestTimeout, false));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(script.sent().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_body_failure_is_nobodys_fault_upstream() {
    let s = Setup::new(Class::Read);
    let script = Script::new(&[Step::Fail(UpstreamFailure::RequestBody)]);
    let (error, _) = error(s.run(&script).await);
    assert!(matches!(error, ProxyError::BadRequest(_)), "{error:?}");
    assert!(
        script.outcomes.lock().unwrap().is_empty(),
        "no region blamed"
    );
}

#[tokio::test(start_paused = true)]
async fn the_per_try_timer_waits_for_a_slow_clients_body_then_measures_the_region() {
    let mut s = Setup::new(Class::Write);
    s.per_try = Duration::from_secs(1);
    let script =
        Script::new(&[Step::AnswerOnceBodyIn(200)]).with_slow_body(Some(Duration::from_secs(3)));
    let got = s.run(&script).await;
    assert_eq!(status(&got), (200, P));
    assert_eq!(script.regions(), [P]);
    assert_eq!(
        *script.outcomes.lock().unwrap(),
        [(P, Outcome::Status(200))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_region_hung_after_a_slow_body_is_in_times_out_per_try_from_then() {
    let mut s = Setup::new(Class::Write);
    s.per_try = Duration::from_secs(1);
    let script = Script::new(&[Step::Hang]).with_slow_body(Some(Duration::from_secs(2)));
    let started = Instant::now();
    let got = s.run(&script).await;
    assert_eq!(error(got).0, ProxyError::UpstreamTimeout);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(*script.outcomes.lock().unwrap(), [(P, Outcome::Timeout)]);
}

#[tokio::test(start_paused = true)]
async fn a_body_still_arriving_at_the_request_deadline_is_the_clients_timeout() {
    let s = Setup::new(Class::Write);
    let script = Script::new(&[Step::Hang]).with_slow_body(None);
    let started = Instant::now();
    let got = s.run(&script).await;
    assert_eq!(error(got).0, ProxyError::BodyTimeout);
    assert_eq!(started.elapsed(), s.request_timeout);
    assert!(
        script.outcomes.lock().unwrap().is_empty(),
        "no region judged"
    );
    assert_eq!(script.regions(), [P]);
}

#[tokio::test(start_paused = true)]
async fn a_reset_while_the_clients_body_arrives_is_neutral_for_the_region() {
    let s = Setup::new(Class::Write);
    let script = Script::new(&[Step::Fail(UpstreamFailure::Reset)]).with_slow_body(None);
    let _ = s.run(&script).await;
    assert!(
        script.outcomes.lock().unwrap().is_empty(),
        "no region judged"
    );
}

#[tokio::test(start_paused = true)]
async fn a_busy_region_is_answered_503_at_once_and_judged_for_nothing() {
    for class in [Class::Read, Class::Write] {
        let s = Setup::new(class);
        let script = Script::new(&[Step::Busy, Step::Answer(200, None)]);
        let (error, unknown) = error(s.run(&script).await);
        assert_eq!((error, unknown), (ProxyError::UpstreamBusy, false));
        assert!(script.sent().is_empty(), "nothing was sent");
        assert!(script.outcomes.lock().unwrap().is_empty());
        // The wait was failway's: no retry on the other region either.
        assert_eq!(script.steps.lock().unwrap().len(), 1);
        assert_eq!(script.start.elapsed(), Duration::from_secs(5));
    }
}

#[tokio::test(start_paused = true)]
async fn running_out_of_descriptors_is_counted_never_retried_nor_judged() {
    use crate::upstream::client::LocalKind;
    for class in [Class::Read, Class::Write] {
        let s = Setup::new(class);
        let script = Script::new(&[
            Step::Fail(UpstreamFailure::LocalResources(LocalKind::Fds)),
            Step::Answer(200, None),
        ]);
        let (error, unknown) = error(s.run(&script).await);
        assert_eq!((error, unknown), (ProxyError::LocalResources, false));
        assert_eq!(script.regions(), [P]);
        assert!(script.outcomes.lock().unwrap().is_empty());
        assert_eq!(s.metric("failway_local_errors_total{kind=\"fds\"}"), "1");
    }
}
