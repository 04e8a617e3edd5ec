//! What every blocking builder ([`EphemeralLock`](super::EphemeralLock),
//! [`Semaphore`](super::Semaphore), [`MultiLock`](super::MultiLock), [`RwLock`](super::RwLock))
//! keeps: the async builder it drives and the blocking client
//! whose runtime thread runs it. The steps their methods share live here once: choose the client,
//! run a call on the runtime thread and put the builder back, block until a hold is lost.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::client::Client;
use super::runtime::Runtime;
use crate::error::{Error, Result};
use crate::primitive::holding::Held;

/// An async builder that a blocking one drives.
pub(super) trait Driven: Send + 'static {
    /// What it is, for the error when a stopped runtime thread took it ("lock", "semaphore").
    const WHAT: &'static str;
    /// The builder using `client`.
    fn with_client(self, client: crate::Client) -> Self;
}

impl Driven for crate::EphemeralLock {
    const WHAT: &'static str = "lock";
    fn with_client(self, client: crate::Client) -> Self {
        self.client(client)
    }
}

impl Driven for crate::Semaphore {
    const WHAT: &'static str = "semaphore";
    fn with_client(self, client: crate::Client) -> Self {
        self.client(client)
    }
}

impl Driven for crate::MultiLock {
    const WHAT: &'static str = "multi-lock";
    fn with_client(self, client: crate::Client) -> Self {
        self.client(client)
    }
}

/// The async builder (absent only after a stopped runtime thread dropped it) and the client.
#[derive(Debug)]
pub(super) struct Handle<P> {
    // Field order matters: the builder (and what it may hold) drops before the runtime handle.
    inner: Option<P>,
    client: Option<Client>,
}

impl<P: Driven> Handle<P> {
    pub(super) fn new(inner: P, client: Option<Client>) -> Self {
        Handle { inner: Some(inner), client }
    }

    /// Change the builder (a setter).
    pub(super) fn map(&mut self, f: impl FnOnce(P) -> P) {
        self.inner = self.inner.take().map(f);
    }

    pub(super) fn set_client(&mut self, client: Client) {
        let inner = client.inner.clone();
        self.map(|p| p.with_client(inner));
        self.client = Some(client);
    }

    /// The builder, to read from.
    pub(super) fn get(&self) -> Option<&P> {
        self.inner.as_ref()
    }

    /// The runtime thread of the client in use, once one is chosen.
    pub(super) fn runtime(&self) -> Option<Arc<Runtime>> {
        self.client.as_ref().map(|c| c.rt.clone())
    }

    /// Whether a call was ever made (a client chosen).
    pub(super) fn used(&self) -> bool {
        self.client.is_some()
    }

    /// The builder, taken out with the client it will use (from the environment when none was set).
    pub(super) fn parts(&mut self) -> Result<(P, Client)> {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = Client::from_env()?;
                self.client = Some(c.clone());
                c
            }
        };
        let what = P::WHAT;
        let inner = self
            .inner
            .take()
            .ok_or_else(|| Error::Cancelled(format!("this {what} was lost with a stopped runtime thread")))?;
        Ok((inner.with_client(client.inner.clone()), client))
    }

    /// Run `f` on the builder on the runtime thread, and put the builder back.
    pub(super) fn call<T, F>(&mut self, f: impl FnOnce(P) -> F) -> Result<T>
    where
        F: Future<Output = (P, Result<T>)> + Send + 'static,
        T: Send + 'static,
    {
        let (inner, client) = self.parts()?;
        let (inner, result) = client.rt.block_on(f(inner))?;
        self.inner = Some(inner);
        result
    }

    /// Block until `held` is lost, at most `timeout`; `true` if lost (or nothing is held).
    pub(super) fn lost<H: Held>(&self, held: Option<Arc<H>>, timeout: Option<Duration>) -> bool {
        match (&self.client, held) {
            (Some(c), Some(h)) => wait_lost(&c.rt, Some(held_lost(h)), timeout),
            _ => true,
        }
    }
}

/// Block until `lost` resolves, at most `timeout` (`None`: forever); `true` if it did. Nothing to
/// wait for (`None`) counts as lost.
pub(super) fn wait_lost<F>(rt: &Runtime, lost: Option<F>, timeout: Option<Duration>) -> bool
where
    F: Future<Output = ()> + Send + 'static,
{
    let Some(lost) = lost else { return true };
    let lost = async move {
        match timeout {
            Some(t) => tokio::time::timeout(t, lost).await.is_ok(),
            None => {
                lost.await;
                true
            }
        }
    };
    // A stopped runtime cannot renew: the lock is as good as lost.
    rt.block_on(lost).unwrap_or(true)
}

/// The loss of `held`, as a future that owns it.
pub(super) async fn held_lost<H: Held>(held: Arc<H>) {
    held.wait_lost().await
}

/// The methods of a blocking builder that holds (`hold`, `acquire`, `release`, `is_held`, `lost`,
/// `lost_timeout`), written once over its `handle: Handle<_>`; each builder invokes it with its own
/// docs for every method. `guard` is the blocking guard (fields `inner`, `rt`), `held` the async
/// builder's accessor of its current hold.
macro_rules! blocking_holding_methods {
    (
        guard: $guard:ident, held: $held:ident;
        $(#[$hold:meta])* hold;
        $(#[$acquire:meta])* acquire;
        $(#[$release:meta])* release;
        $(#[$is_held:meta])* is_held;
        $(#[$lost:meta])* lost;
        $(#[$lost_timeout:meta])* lost_timeout;
    ) => {
        $(#[$hold])*
        pub fn hold(mut self) -> Result<$guard> {
            let (inner, client) = self.handle.parts()?;
            let inner = client.rt.block_on(inner.hold())??;
            Ok($guard { inner, rt: client.rt.clone() })
        }

        $(#[$acquire])*
        pub fn acquire(&mut self, fail_hard: bool) -> Result<bool> {
            self.handle.call(move |mut inner| async move {
                let r = inner.acquire(fail_hard).await;
                (inner, r)
            })
        }

        $(#[$release])*
        pub fn release(&mut self) -> Result<()> {
            if !self.handle.used() {
                return Ok(()); // never acquired
            }
            self.handle.call(|mut inner| async move {
                let r = inner.release().await;
                (inner, r)
            })
        }

        $(#[$is_held])*
        pub fn is_held(&self) -> bool {
            self.handle.get().is_some_and(|p| p.is_held())
        }

        $(#[$lost])*
        pub fn lost(&self) {
            self.handle.lost(self.handle.get().and_then(|p| p.$held()), None);
        }

        $(#[$lost_timeout])*
        pub fn lost_timeout(&self, timeout: Duration) -> bool {
            self.handle.lost(self.handle.get().and_then(|p| p.$held()), Some(timeout))
        }
    };
}
pub(super) use blocking_holding_methods;
