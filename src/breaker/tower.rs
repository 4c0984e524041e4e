//! The circuit breaker as a [`tower`](::tower) middleware (feature `tower`).
//!
//! [`BreakerLayer`] wraps a service so that every request is one call on one
//! name of a [`CircuitBreaker`]: admitted or rejected when the request is
//! made ([`Service::call`]), its outcome recorded when the response future
//! resolves. The response future owns the call's [`Permit`], so the
//! permit's drop rule is the layer's cancellation rule: a response future
//! dropped before it resolves (a client that went away, a timeout around
//! the service, a `select!` that picked another branch) records nothing,
//! and a half-open trial place it held is offered again at once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::tower::{Layer, Service};

use super::{CallError, CircuitBreaker, Permit, Rejected};

/// Decides whether a finished call counts as a failure of the upstream.
///
/// Implemented by [`ErrorsAreFailures`] (the default: every `Err`, no `Ok`)
/// and by every `Fn(Result<&Res, &E>) -> bool`, so that, say, a `503`
/// response counts as a failure while a `404` error does not:
///
/// ```
/// use raceless::breaker::Classify;
///
/// let only_5xx = |r: Result<&u16, &std::io::Error>| r.map_or(true, |status| *status >= 500);
/// assert!(only_5xx.is_failure(Ok(&503)));
/// assert!(!only_5xx.is_failure(Ok(&404)));
/// ```
pub trait Classify<Res, E> {
    /// Whether this outcome of a call counts as a failure.
    fn is_failure(&self, result: Result<&Res, &E>) -> bool;
}

/// The default [`Classify`]: every error is a failure, every response a
/// success.
///
/// ```
/// use raceless::breaker::{Classify, ErrorsAreFailures};
/// assert!(Classify::<(), &str>::is_failure(&ErrorsAreFailures, Err(&"timeout")));
/// assert!(!Classify::<(), &str>::is_failure(&ErrorsAreFailures, Ok(&())));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorsAreFailures;

impl<Res, E> Classify<Res, E> for ErrorsAreFailures {
    #[inline]
    fn is_failure(&self, result: Result<&Res, &E>) -> bool {
        result.is_err()
    }
}

impl<Res, E, F> Classify<Res, E> for F
where
    F: Fn(Result<&Res, &E>) -> bool,
{
    #[inline]
    fn is_failure(&self, result: Result<&Res, &E>) -> bool {
        self(result)
    }
}

/// A [`tower::Layer`](::tower::Layer) that guards a service with one name of
/// a [`CircuitBreaker`].
///
/// The wrapped [`BreakerService`] answers with
/// `Err(`[`CallError::Rejected`]`)` — without calling the inner service —
/// while the name is open (with [`Rejected::retry_after`] for a
/// `Retry-After` header), and otherwise calls the inner service and records
/// the outcome when the response future resolves: an `Err` is a failure, a
/// response a success, unless a [classifier](Self::with_classifier) says
/// otherwise. Errors of the inner service come back as
/// [`CallError::Failed`]. A response future dropped before it resolves
/// records nothing (see [`Permit`]).
///
/// Several layers may share one breaker, each with its own name (one per
/// upstream); clones of a layer or service share the name's state.
///
/// ```
/// # #[cfg(feature = "tower")] {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use raceless::breaker::{BreakerLayer, CallError, CircuitBreaker};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let breaker = Arc::new(
///     CircuitBreaker::builder()
///         .failure_threshold(2)
///         .cool_down(Duration::from_secs(30))
///         .build()?,
/// );
/// let layer = BreakerLayer::new(breaker.clone(), "search");
/// let flaky = service_fn(|ok: bool| async move { if ok { Ok("hits") } else { Err("timeout") } });
/// let search = layer.layer(flaky);
///
/// assert_eq!(search.clone().oneshot(true).await.unwrap(), "hits");
/// for _ in 0..2 {
///     let e = search.clone().oneshot(false).await.unwrap_err();
///     assert!(matches!(e, CallError::Failed("timeout")));
/// }
/// // Open: rejected without calling the service, for about 30 s.
/// let Err(CallError::Rejected(rejected)) = search.clone().oneshot(true).await else { panic!() };
/// assert!(rejected.retry_after.unwrap() <= Duration::from_secs(30));
/// assert!(breaker.is_open("search"));
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// # }).unwrap();
/// # }
/// ```
pub struct BreakerLayer<C = ErrorsAreFailures> {
    breaker: Arc<CircuitBreaker>,
    name: Arc<str>,
    classify: C,
}

impl BreakerLayer {
    /// A layer that guards its services with `name` on `breaker`; every
    /// `Err` of the inner service is a failure.
    ///
    /// ```
    /// use raceless::breaker::{BreakerLayer, CircuitBreaker};
    /// use std::sync::Arc;
    ///
    /// let layer = BreakerLayer::new(Arc::new(CircuitBreaker::new(5)?), "payments");
    /// assert_eq!(layer.name(), "payments");
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn new(breaker: Arc<CircuitBreaker>, name: impl Into<String>) -> Self {
        Self {
            breaker,
            name: Arc::from(name.into()),
            classify: ErrorsAreFailures,
        }
    }
}

impl<C> BreakerLayer<C> {
    /// The same layer, with `classify` deciding which outcomes are failures
    /// (see [`Classify`]). For an HTTP client service that returns 5xx
    /// responses as `Ok`, count those too:
    ///
    /// ```
    /// use raceless::breaker::{BreakerLayer, CircuitBreaker};
    /// use std::sync::Arc;
    ///
    /// let layer = BreakerLayer::new(Arc::new(CircuitBreaker::new(5)?), "api")
    ///     .with_classifier(|r: Result<&u16, &std::io::Error>| r.map_or(true, |s| *s >= 500));
    /// # let _ = layer;
    /// # Ok::<(), raceless::breaker::BreakerError>(())
    /// ```
    pub fn with_classifier<C2>(self, classify: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            breaker: self.breaker,
            name: self.name,
            classify,
        }
    }

    /// The name the layer's services call on.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker the layer's services call through.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }
}

impl<C: Clone> Clone for BreakerLayer<C> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
            name: self.name.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<C> fmt::Debug for BreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            name: self.name.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service of a [`BreakerLayer`]: `inner` guarded by one breaker name.
///
/// [`poll_ready`](Service::poll_ready) is the inner service's (its error
/// as [`CallError::Failed`], recorded nowhere: no call was made);
/// [`call`](Service::call) acquires a [`Permit`] — or answers
/// [`CallError::Rejected`] at once, without calling `inner` — and returns a
/// [`ResponseFuture`] that records the outcome when it resolves.
///
/// ```
/// # #[cfg(feature = "tower")] {
/// use raceless::breaker::{BreakerLayer, CallError, CircuitBreaker};
/// use std::sync::Arc;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let breaker = Arc::new(CircuitBreaker::new(1)?);
/// let svc = ServiceBuilder::new()
///     .layer(BreakerLayer::new(breaker.clone(), "db"))
///     .service(service_fn(|q: &'static str| async move { Err::<(), _>(q) }));
/// assert!(matches!(svc.clone().oneshot("boom").await, Err(CallError::Failed("boom"))));
/// assert!(matches!(svc.oneshot("again").await, Err(CallError::Rejected(_))));
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// # }).unwrap();
/// # }
/// ```
pub struct BreakerService<S, C = ErrorsAreFailures> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    name: Arc<str>,
    classify: C,
}

impl<S: Clone, C: Clone> Clone for BreakerService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            name: self.name.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for BreakerService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerService")
            .field("inner", &self.inner)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S, C> BreakerService<S, C> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The name this service calls on.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<S, C, Req> Service<Req> for BreakerService<S, C>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Failed)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let kind = match self.breaker.acquire(&self.name) {
            Ok(permit) => Kind::Running {
                // Boxed so the response future is `Unpin` without unsafe
                // pin projections; `Send` exactly when `S::Future` is.
                future: Box::pin(self.inner.call(req)),
                permit: Some(permit),
                classify: self.classify.clone(),
            },
            Err(rejected) => Kind::Rejected(Some(rejected)),
        };
        ResponseFuture { kind }
    }
}

/// The response future of a [`BreakerService`]: resolves to the inner
/// service's response, [`CallError::Failed`] with its error, or
/// [`CallError::Rejected`] at once if the breaker did not admit the call.
///
/// It holds the call's [`Permit`]: the outcome is recorded when the inner
/// future resolves; dropped before that, the permit is released and
/// nothing is recorded. `Send` when the inner future and the classifier
/// are.
///
/// ```
/// # #[cfg(feature = "tower")] {
/// use raceless::breaker::{BreakerLayer, CircuitBreaker};
/// use std::sync::Arc;
/// use tower::{service_fn, Layer, Service};
///
/// let breaker = Arc::new(CircuitBreaker::new(1)?);
/// let hangs = service_fn(|()| std::future::pending::<Result<(), std::io::Error>>());
/// let mut svc = BreakerLayer::new(breaker.clone(), "slow").layer(hangs);
/// let response = svc.call(()); // admitted: holds a permit
/// drop(response); // the caller gave up: released, nothing recorded
/// assert_eq!(breaker.failures("slow"), 0);
/// assert!(!breaker.is_open("slow"));
/// # }
/// # Ok::<(), raceless::breaker::BreakerError>(())
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<F, C> {
    kind: Kind<F, C>,
}

// Nothing in it is pinned structurally: the inner future lives in its own
// `Pin<Box<_>>`, and the permit and classifier are only used by reference.
impl<F, C> Unpin for ResponseFuture<F, C> {}

enum Kind<F, C> {
    Rejected(Option<Rejected>),
    Running {
        future: Pin<Box<F>>,
        permit: Option<Permit>,
        classify: C,
    },
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Rejected(r) => f.debug_tuple("ResponseFuture::Rejected").field(r).finish(),
            Kind::Running { permit, .. } => f
                .debug_struct("ResponseFuture::Running")
                .field("permit", permit)
                .finish_non_exhaustive(),
        }
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    C: Classify<Res, E>,
{
    type Output = Result<Res, CallError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `ResponseFuture` is `Unpin`: the inner future is boxed.
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Rejected(rejected) => Poll::Ready(Err(CallError::Rejected(
                rejected
                    .take()
                    .expect("ResponseFuture polled after completion"),
            ))),
            Kind::Running {
                future,
                permit,
                classify,
            } => {
                let result = std::task::ready!(future.as_mut().poll(cx));
                let permit = permit
                    .take()
                    .expect("ResponseFuture polled after completion");
                if classify.is_failure(result.as_ref()) {
                    permit.failure();
                } else {
                    permit.success();
                }
                Poll::Ready(result.map_err(CallError::Failed))
            }
        }
    }
}

#[cfg(all(test, not(raceless_loom)))]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use ::tower::{service_fn, Layer, ServiceExt};

    use super::*;
    use crate::breaker::State;
    use crate::clock::ManualClock;

    fn breaker(clock: &ManualClock) -> Arc<CircuitBreaker> {
        Arc::new(
            CircuitBreaker::builder()
                .failure_threshold(3)
                .cool_down(Duration::from_secs(10))
                .clock(clock.clone())
                .track_totals(true)
                .build()
                .unwrap(),
        )
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn noop_waker() -> std::task::Waker {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        std::task::Waker::from(Arc::new(Noop))
    }

    fn totals(b: &CircuitBreaker) -> (Option<u64>, Option<u64>) {
        let m = b.metrics();
        let m = m.iter().find(|m| &*m.name == "up").unwrap();
        (m.total_successes, m.total_failures)
    }

    /// `Ok(true)` succeeds, `Ok(false)` fails with "down".
    fn flaky() -> impl Service<
        bool,
        Response = &'static str,
        Error = &'static str,
        Future = impl Future<Output = Result<&'static str, &'static str>> + Send,
    > + Clone {
        service_fn(|ok: bool| async move {
            if ok {
                Ok("up")
            } else {
                Err("down")
            }
        })
    }

    #[test]
    fn failures_open_it_and_a_rejection_says_when_to_retry() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        let svc = BreakerLayer::new(b.clone(), "up").layer(flaky());
        block_on(async {
            assert_eq!(svc.clone().oneshot(true).await, Ok("up"));
            for _ in 0..3 {
                assert_eq!(
                    svc.clone().oneshot(false).await,
                    Err(CallError::Failed("down"))
                );
            }
            assert_eq!(b.state("up"), State::Open);
            clock.advance(Duration::from_secs(4));
            match svc.clone().oneshot(true).await {
                Err(CallError::Rejected(r)) => {
                    assert_eq!(r.retry_after, Some(Duration::from_secs(6)))
                }
                other => panic!("expected a rejection, got {other:?}"),
            }
            // After the cool-down, a successful trial closes it.
            clock.advance(Duration::from_secs(6));
            assert_eq!(svc.clone().oneshot(true).await, Ok("up"));
            assert_eq!(b.state("up"), State::Closed);
        });
        assert_eq!(totals(&b), (Some(2), Some(3)));
    }

    #[test]
    fn a_rejected_call_never_reaches_the_inner_service() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let inner = service_fn(move |()| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Err::<(), _>("down") }
        });
        let svc = BreakerLayer::new(b.clone(), "up").layer(inner);
        block_on(async {
            for _ in 0..5 {
                let _ = svc.clone().oneshot(()).await;
            }
        });
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(b.metrics()[0].rejected_calls, 2);
    }

    #[test]
    fn a_dropped_response_future_records_nothing() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        // The inner future never resolves: the caller gives up.
        let never = service_fn(|()| std::future::pending::<Result<(), &'static str>>());
        let mut svc = BreakerLayer::new(b.clone(), "up").layer(never);
        for _ in 0..10 {
            let mut fut = svc.call(());
            let waker = noop_waker();
            let mut cx = Context::from_waker(&waker);
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
            drop(fut);
        }
        assert_eq!(totals(&b), (Some(0), Some(0)));
        assert_eq!(b.failures("up"), 0);
        assert_eq!(b.state("up"), State::Closed);
    }

    #[test]
    fn a_dropped_trial_is_offered_again() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        for _ in 0..3 {
            b.record_failure("up");
        }
        clock.advance(Duration::from_secs(10));
        let hang = service_fn(|hang: bool| async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(())
        });
        let mut svc = BreakerLayer::new(b.clone(), "up").layer(hang);
        let mut trial = svc.call(true);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut trial).poll(&mut cx).is_pending());
        // The one trial place is taken: others are rejected.
        let r = block_on(svc.clone().oneshot(false));
        assert!(matches!(r, Err(CallError::Rejected(_))));
        drop(trial);
        // Released: the next caller runs the trial, and it closes the name.
        block_on(svc.clone().oneshot(false)).unwrap();
        assert_eq!(b.state("up"), State::Closed);
    }

    #[test]
    fn a_classifier_decides_what_counts() {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        let status = service_fn(|s: u16| async move { Ok::<_, Infallible>(s) });
        let svc = BreakerLayer::new(b.clone(), "up")
            .with_classifier(|r: Result<&u16, &Infallible>| r.map_or(true, |s| *s >= 500))
            .layer(status);
        block_on(async {
            for _ in 0..5 {
                assert_eq!(svc.clone().oneshot(404).await, Ok(404));
            }
            assert_eq!(b.state("up"), State::Closed);
            for _ in 0..3 {
                assert_eq!(svc.clone().oneshot(503).await, Ok(503));
            }
            assert_eq!(b.state("up"), State::Open);
        });
    }

    #[test]
    fn poll_ready_errors_are_failed_and_not_recorded() {
        struct NotReady;
        impl Service<()> for NotReady {
            type Response = ();
            type Error = &'static str;
            type Future = std::future::Ready<Result<(), &'static str>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Err("overloaded"))
            }
            fn call(&mut self, (): ()) -> Self::Future {
                unreachable!("never ready")
            }
        }
        let clock = ManualClock::new();
        let b = breaker(&clock);
        let svc = BreakerLayer::new(b.clone(), "up").layer(NotReady);
        let r = block_on(svc.oneshot(()));
        assert_eq!(r, Err(CallError::Failed("overloaded")));
        assert_eq!(b.failures("up"), 0);
    }

    #[test]
    fn the_response_future_is_send_when_the_inner_one_is() {
        fn is_send<T: Send>(_: &T) {}
        let clock = ManualClock::new();
        let mut svc = BreakerLayer::new(breaker(&clock), "up").layer(flaky());
        let fut = svc.call(true);
        is_send(&fut);
        is_send(&svc);
    }
}
