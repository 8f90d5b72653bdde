//! openraft's async runtime (the view leader's Raft group): tokio's, except for where openraft
//! draws random numbers (its election timeouts). Those come from a per-thread generator that the
//! simulation seeds ([`seed_thread`]), so one seed replays one run; outside the simulation the
//! generator is seeded from the operating system. It lives in the seam because it is one of the
//! places randomness enters the store.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioInstant, TokioRuntime};
use rand::rngs::StdRng;
use rand::SeedableRng;

thread_local! {
    /// The state of this thread's seed sequence; `None` until seeded or first used.
    static SEED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Makes every later draw of openraft on this thread follow from `seed`.
pub fn seed_thread(seed: u64) {
    SEED.with(|cell| cell.set(Some(seed)));
}

/// The next seed of this thread's sequence (splitmix64).
fn next_seed() -> u64 {
    SEED.with(|cell| {
        let state = cell.get().unwrap_or_else(rand::random);
        let next = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        cell.set(Some(next));
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// tokio, with seeded randomness.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeededRuntime;

impl AsyncRuntime for SeededRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = StdRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <TokioRuntime as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        StdRng::seed_from_u64(next_seed())
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        TokioRuntime::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn a_seeded_thread_draws_the_same_numbers_again() {
        let draw = || {
            (0..4)
                .map(|_| SeededRuntime::thread_rng().gen_range(0..1_000_000u64))
                .collect::<Vec<_>>()
        };
        seed_thread(7);
        let first = draw();
        seed_thread(7);
        assert_eq!(draw(), first);
        seed_thread(8);
        assert_ne!(draw(), first);
    }
}
