//! A tower layer under the operator's `kube::Client` that refuses every mutating request unless the
//! [`Fence`] admits it, so that no write site has to remember to ask: Secrets, status, events, generated
//! TencentCertificates all go through it. The elector has a client of its own (it must write the Lease to
//! become the leader), whose writes are conditional on the Lease's resourceVersion instead.
//!
//! The layer sits inside the client's request buffer, next to the wire: a write is judged when it is
//! sent, not when it was queued. A write that was admitted is bounded by the term it was admitted in: if
//! no answer came before the term ends, the caller gets [`NotLeader`] (its effect is then unknown, as for
//! any timeout) rather than being left to believe it still leads.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request};
use tower::{BoxError, Layer, Service};
use tracing::debug;

use super::fence::{Fence, NotLeader};

/// Requests that change nothing in the API server's store.
fn is_write<B>(request: &Request<B>) -> bool {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return false;
    }
    // Token and access reviews are POSTs that ask a question and store nothing (authenticated metrics
    // answer them on a standby too).
    let path = request.uri().path();
    !(path.starts_with("/apis/authentication.k8s.io/")
        || path.starts_with("/apis/authorization.k8s.io/"))
}

#[derive(Debug, Clone)]
pub struct FenceLayer {
    fence: Fence,
}

impl FenceLayer {
    pub fn new(fence: Fence) -> Self {
        Self { fence }
    }
}

impl<S> Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fenced {
            inner,
            fence: self.fence.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

type Answer<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

impl<S, B> Service<Request<B>> for Fenced<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Answer<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !is_write(&request) {
            let answer = self.inner.call(request);
            return Box::pin(async move { answer.await.map_err(Into::into) });
        }
        match self.fence.check() {
            Err(refusal) => {
                // Names only (method and path): never a body.
                debug!(method = %request.method(), path = %request.uri().path(), "write refused: not the leader");
                Box::pin(std::future::ready(Err(refusal.into())))
            }
            Ok(None) => {
                let answer = self.inner.call(request);
                Box::pin(async move { answer.await.map_err(Into::into) })
            }
            Ok(Some(term_ends)) => {
                let answer = self.inner.call(request);
                Box::pin(async move {
                    match tokio::time::timeout_at(term_ends, answer).await {
                        Ok(answer) => answer.map_err(Into::into),
                        Err(_) => Err(NotLeader.into()),
                    }
                })
            }
        }
    }
}

/// The operator's client: `config`'s usual stack (over HTTP/2 where offered, see [`crate::api_client`])
/// with the fence under it.
pub fn fenced_client(config: kube::Config, fence: &Fence) -> Result<kube::Client, kube::Error> {
    Ok(crate::api_client::builder(config)?
        .with_layer(&FenceLayer::new(fence.clone()))
        .build())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    /// Counts what reaches it and answers after `delay`.
    #[derive(Clone)]
    struct Backend {
        reached: Arc<AtomicUsize>,
        delay: Duration,
    }

    impl Service<Request<()>> for Backend {
        type Response = &'static str;
        type Error = BoxError;
        type Future = Answer<&'static str>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.reached.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok("done")
            })
        }
    }

    fn request(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    fn fenced(fence: &Fence, delay: Duration) -> (Fenced<Backend>, Arc<AtomicUsize>) {
        let reached = Arc::new(AtomicUsize::new(0));
        let backend = Backend {
            reached: reached.clone(),
            delay,
        };
        (FenceLayer::new(fence.clone()).layer(backend), reached)
    }

    async fn send(service: &mut Fenced<Backend>, method: Method, path: &str) -> Result<(), bool> {
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .unwrap();
        service
            .call(request(method, path))
            .await
            .map(|_| ())
            .map_err(|err| super::super::fence::is_not_leader(&*err))
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_reads_but_every_write_verb_is_refused_before_it_is_sent() {
        let fence = Fence::standby();
        let (mut service, reached) = fenced(&fence, Duration::ZERO);
        let secret = "/api/v1/namespaces/web/secrets/shop";
        assert_eq!(send(&mut service, Method::GET, secret).await, Ok(()));
        for verb in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(send(&mut service, verb, secret).await, Err(true));
        }
        assert_eq!(reached.load(Ordering::SeqCst), 1, "only the read was sent");
        // Reviews store nothing: allowed on a standby.
        let review = "/apis/authentication.k8s.io/v1/tokenreviews";
        assert_eq!(send(&mut service, Method::POST, review).await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_pass_within_the_term_and_stop_when_it_runs_out() {
        let fence = Fence::standby();
        let (mut service, reached) = fenced(&fence, Duration::from_millis(100));
        fence.grant_until(Instant::now() + Duration::from_secs(5));
        let status = "/apis/tencentcert.io/v1alpha1/namespaces/web/tencentcertificates/shop/status";
        assert_eq!(send(&mut service, Method::PATCH, status).await, Ok(()));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(send(&mut service, Method::PATCH, status).await, Err(true));
        assert_eq!(reached.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_still_unanswered_when_the_term_ends_reports_not_leader() {
        let fence = Fence::standby();
        let (mut service, _) = fenced(&fence, Duration::from_secs(10));
        let started = Instant::now();
        fence.grant_until(started + Duration::from_secs(2));
        let secret = "/api/v1/namespaces/web/secrets/shop";
        assert_eq!(send(&mut service, Method::PATCH, secret).await, Err(true));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn without_election_everything_passes() {
        let fence = Fence::unbounded();
        let (mut service, reached) = fenced(&fence, Duration::ZERO);
        tokio::time::advance(Duration::from_secs(86_400)).await;
        let secret = "/api/v1/namespaces/web/secrets/shop";
        assert_eq!(send(&mut service, Method::DELETE, secret).await, Ok(()));
        assert_eq!(reached.load(Ordering::SeqCst), 1);
    }
}
