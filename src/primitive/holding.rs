//! What a builder that can hold its primitive ([`EphemeralLock`](crate::EphemeralLock),
//! [`Semaphore`](crate::Semaphore)) keeps between its calls: the hold it took, if any, and the
//! steps their `hold`, `acquire`, `release` and `lost` share (refuse while held, finish the cleanup
//! of a lost hold first, remember what an acquire took). The public methods stay on each builder
//! with their own docs; their bodies are these steps.

use std::future::Future;
use std::sync::Arc;

use crate::error::{Error, Result};

/// One held thing (a lock's `Hold`, a semaphore's `Permit`), as a builder sees it.
pub(crate) trait Held: Send + Sync + 'static {
    /// Held: not released, not known lost, the lease not run out.
    fn is_held(&self) -> bool;
    /// Resolves when known lost.
    fn wait_lost(self: &Arc<Self>) -> impl Future<Output = ()> + Send;
    /// Give it back (or clean up after a loss); never touches what another session holds.
    fn release(&self) -> impl Future<Output = Result<()>> + Send;
}

/// The hold a builder took, if any.
#[derive(Debug)]
pub(crate) struct Holding<H>(Option<Arc<H>>);

impl<H> Default for Holding<H> {
    fn default() -> Self {
        Holding(None)
    }
}

impl<H: Held> Holding<H> {
    /// The hold taken, held or lost.
    pub(crate) fn current(&self) -> Option<Arc<H>> {
        self.0.clone()
    }

    /// The hold, only while it is held.
    pub(crate) fn held(&self) -> Option<&Arc<H>> {
        self.0.as_ref().filter(|h| h.is_held())
    }

    pub(crate) fn is_held(&self) -> bool {
        self.held().is_some()
    }

    /// Resolves when the hold is known lost; at once when there is none.
    pub(crate) async fn lost(&self) {
        if let Some(h) = &self.0 {
            h.wait_lost().await
        }
    }

    /// Before a `hold` (which consumes the builder): a builder that took something refuses.
    pub(crate) fn check_unused(&self) -> Result<()> {
        match self.0 {
            Some(_) => Err(Error::AlreadyHeld),
            None => Ok(()),
        }
    }

    /// Before an `acquire`: refuse while held (not re-entrant); finish the cleanup of a lost hold
    /// left over (it never touches another holder's key).
    pub(crate) async fn make_ready(&mut self) -> Result<()> {
        if self.is_held() {
            return Err(Error::AlreadyHeld);
        }
        match self.0.take() {
            Some(old) => old.release().await,
            None => Ok(()),
        }
    }

    /// Remember what an acquire took; `true` when it took something.
    pub(crate) fn keep(&mut self, taken: Option<Arc<H>>) -> bool {
        self.0 = taken;
        self.0.is_some()
    }

    /// The hold, forgotten by the builder (to release it).
    pub(crate) fn take(&mut self) -> Option<Arc<H>> {
        self.0.take()
    }
}

/// The public methods of a builder that holds (`is_held`, `lost`, `hold`, `acquire`, `release`),
/// written once; each builder invokes it with its own docs for every method, so that its docs and
/// examples speak of its own primitive. The builder needs a `held: Holding<_>` field, a
/// `fn plan(&mut self) -> Result<Plan>` that validates before any request, and names the guard
/// type with the field that holds the hold, the procedure (`run(plan, fail_hard)`), and the field
/// that names what is wanted (for `NotAcquired`).
macro_rules! holding_methods {
    (
        guard: $guard:ident { $field:ident }, procedure: $run:path, wanted: $wanted:ident;
        $(#[$is_held:meta])* is_held;
        $(#[$lost:meta])* lost;
        $(#[$hold:meta])* hold;
        $(#[$acquire:meta])* acquire;
        $(#[$release:meta])* release;
    ) => {
        $(#[$is_held])*
        pub fn is_held(&self) -> bool {
            self.held.is_held()
        }

        $(#[$lost])*
        pub async fn lost(&self) {
            self.held.lost().await
        }

        $(#[$hold])*
        pub async fn hold(mut self) -> Result<$guard> {
            self.held.check_unused()?;
            let plan = self.plan()?;
            // fail_hard = true never returns Ok(None); keep a typed error rather than a panic.
            let $field = $run(plan, true).await?.ok_or_else(|| Error::not_acquired(&self.$wanted))?;
            Ok($guard { $field })
        }

        $(#[$acquire])*
        pub async fn acquire(&mut self, fail_hard: bool) -> Result<bool> {
            self.held.make_ready().await?;
            let plan = self.plan()?;
            Ok(self.held.keep($run(plan, fail_hard).await?))
        }

        $(#[$release])*
        pub async fn release(&mut self) -> Result<()> {
            match self.held.take() {
                Some($field) => $guard { $field }.release().await,
                None => Ok(()),
            }
        }
    };
}
pub(crate) use holding_methods;
