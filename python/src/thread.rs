//! Carrying values that must stay on their thread through `Python::detach`.

/// A value moved into `Python::detach` (which requires `Send`) and back. `detach` runs
/// its closure on the calling thread, so the value never changes threads.
pub(crate) struct OnThisThread<T>(T);

// SAFETY: `OnThisThread::new` makes its callers promise that the value never leaves the
// thread that wrapped it; the `Send` bound it satisfies is only `detach`'s guard against
// carrying Python references into code that runs without the GIL (it holds none).
unsafe impl<T> Send for OnThisThread<T> {}

impl<T> OnThisThread<T> {
    /// # Safety
    /// The wrapper must be unwrapped on the thread that made it (it may only pass
    /// through `Python::detach`), and `value` must hold no Python reference.
    pub(crate) unsafe fn new(value: T) -> OnThisThread<T> {
        OnThisThread(value)
    }

    pub(crate) fn into_inner(self) -> T {
        self.0
    }
}
