//! Request coalescing: calls in flight, shared by every check that misses
//! the same key.
//!
//! A check's missed keys go out in one call. Keys another check is already
//! asking about join that call instead of starting their own, so N
//! concurrent misses of a key cost one call. The call runs in its own task
//! and its result is shared: a caller that goes away (client disconnect,
//! proxy timeout) cancels nothing and nobody waits on it. The caller's
//! call stores its answer (in the decision cache) before it returns, and
//! its keys leave the table only after that, so every later check finds
//! one or the other; [`Coalescer::completions`] tells a check that looked
//! at the cache just before a call landed to look again.
//!
//! The table knows nothing of what is asked or answered: keys `K`, answers
//! `Arc<T>`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::{BoxFuture, FutureExt as _, Shared, join_all};
use parking_lot::Mutex;

use super::AuthzError;

/// Times a check looks at the cache again because a call landed meanwhile.
const MAX_LOOK_AGAIN: u32 = 2;

/// What a call answers.
pub(crate) type Answer<T> = Result<Arc<T>, AuthzError>;

/// One call in flight.
struct Call<T> {
    id: u64,
    answer: Shared<BoxFuture<'static, Answer<T>>>,
}

/// The in-flight table.
pub(crate) struct Coalescer<K, T> {
    table: Mutex<HashMap<K, Arc<Call<T>>>>,
    /// Calls landed so far; bumped under the table lock after the answer
    /// was stored.
    completions: AtomicU64,
    next_id: AtomicU64,
    /// Where calls run: the runtime the table was made on (the process's
    /// own), not the listener thread that happened to ask first, whose
    /// runtime ends with its connections while other threads may still
    /// wait on the call.
    runtime: Option<tokio::runtime::Handle>,
}

impl<K, T> std::fmt::Debug for Coalescer<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("in_flight", &self.table.lock().len())
            .finish_non_exhaustive()
    }
}

/// What a check does about its misses.
pub(crate) enum Join<T> {
    /// A call landed since the check looked: look at the cache again.
    LookAgain,
    /// Wait for these calls.
    Wait(Waiting<T>),
}

/// The calls a check waits for.
pub(crate) struct Waiting<T> {
    calls: Vec<Arc<Call<T>>>,
    /// For each key joined, the index of its call in `calls`.
    pub(crate) call_of: Vec<usize>,
}

impl<T: Send + Sync + 'static> Waiting<T> {
    /// Every call's answer, in call order (index with [`Waiting::call_of`]).
    pub(crate) async fn wait(&self) -> Vec<Answer<T>> {
        join_all(self.calls.iter().map(|c| c.answer.clone())).await
    }
}

impl<K, T> Coalescer<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            completions: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Calls landed so far: read before looking at the cache, and given to
    /// [`Coalescer::join`].
    pub(crate) fn completions(&self) -> u64 {
        self.completions.load(Ordering::SeqCst)
    }

    /// Joins calls in flight for `keys` and starts one call, `start(new)`,
    /// for the keys none is asking about (`new`: their positions in `keys`,
    /// each key once). The call runs in its own task.
    ///
    /// A call that landed between the check's cache lookup and now has
    /// already left the table, but its answer is in the cache:
    /// `completions` (read before the lookup) tells, and the check is told
    /// to look again (at most [`MAX_LOOK_AGAIN`] times: `looked_again`).
    pub(crate) fn join<F>(
        self: &Arc<Self>,
        keys: &[K],
        completions: u64,
        looked_again: u32,
        start: F,
    ) -> (Join<T>, u64)
    where
        F: FnOnce(&[usize]) -> BoxFuture<'static, Answer<T>>,
    {
        let mut table = self.table.lock();
        if looked_again < MAX_LOOK_AGAIN && self.completions() != completions {
            return (Join::LookAgain, 0);
        }
        let mut calls: Vec<Arc<Call<T>>> = Vec::new();
        let mut call_of: Vec<Option<usize>> = Vec::with_capacity(keys.len());
        let mut new: Vec<usize> = Vec::new();
        let mut coalesced = 0u64;
        for (at, key) in keys.iter().enumerate() {
            if let Some(call) = table.get(key) {
                let index = match calls.iter().position(|c| Arc::ptr_eq(c, call)) {
                    Some(index) => index,
                    None => {
                        calls.push(Arc::clone(call));
                        calls.len() - 1
                    }
                };
                coalesced += 1;
                call_of.push(Some(index));
            } else {
                if !new.iter().any(|&n| keys[n] == *key) {
                    new.push(at);
                }
                call_of.push(None);
            }
        }
        let new_index = calls.len();
        if !new.is_empty() {
            let new_keys: Vec<K> = new.iter().map(|&n| keys[n].clone()).collect();
            let call = self.spawn(start(&new), new_keys.clone());
            for key in new_keys {
                table.insert(key, Arc::clone(&call));
            }
            calls.push(call);
        }
        drop(table);
        let call_of = call_of
            .into_iter()
            .map(|index| index.unwrap_or(new_index))
            .collect();
        (Join::Wait(Waiting { calls, call_of }), coalesced)
    }

    /// Runs `call` in its own task; its `keys` leave the table when the
    /// task ends, however it ends.
    fn spawn(self: &Arc<Self>, call: BoxFuture<'static, Answer<T>>, keys: Vec<K>) -> Arc<Call<T>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let landing = Landing {
            table: Arc::clone(self),
            keys,
            id,
        };
        let call = async move {
            let _landing = landing;
            call.await
        };
        let task = match &self.runtime {
            Some(runtime) => runtime.spawn(call),
            None => tokio::spawn(call),
        };
        let answer = async move {
            task.await.unwrap_or_else(|e| {
                Err(AuthzError::Unavailable(format!(
                    "the authorization task failed: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        Arc::new(Call { id, answer })
    }
}

/// Removes a call's keys from the table when its task ends (answer,
/// error, panic).
struct Landing<K: Hash + Eq, T> {
    table: Arc<Coalescer<K, T>>,
    keys: Vec<K>,
    id: u64,
}

impl<K: Hash + Eq, T> Drop for Landing<K, T> {
    fn drop(&mut self) {
        let coalescer = &self.table;
        let mut table = coalescer.table.lock();
        for key in &self.keys {
            if table.get(key).is_some_and(|c| c.id == self.id) {
                table.remove(key);
            }
        }
        coalescer.completions.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    /// A call started from a listener thread's runtime outlives that
    /// runtime: another thread still waiting on it gets its answer.
    #[tokio::test]
    async fn a_call_outlives_the_runtime_that_started_it() {
        let table: Arc<Coalescer<u32, u32>> = Arc::new(Coalescer::new());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let started = {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                let listener = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                // The runtime is dropped when this returns, its tasks too.
                listener.block_on(async move {
                    let call = async move {
                        let _ = released.await;
                        Ok(Arc::new(7))
                    }
                    .boxed();
                    let (join, _) = table.join(&[1], table.completions(), 0, |_| call);
                    assert!(matches!(join, Join::Wait(_)));
                })
            })
        };
        started.join().unwrap();
        let (join, coalesced) = table.join(&[1], table.completions(), 0, |_| {
            async { Err(AuthzError::Unavailable("a second call".to_owned())) }.boxed()
        });
        assert_eq!(coalesced, 1, "joined the call in flight");
        let Join::Wait(waiting) = join else {
            panic!("nothing to wait for")
        };
        release.send(()).unwrap();
        let answers = waiting.wait().await;
        assert_eq!(*answers[0].as_ref().unwrap().as_ref(), 7);
    }
}
