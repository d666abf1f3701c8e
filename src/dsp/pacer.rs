//! The request rate of this execution environment, adapted the way TCP and the AWS SDK's
//! adaptive retry mode do: it starts at its share of the deployment's budget
//! (`DSP_MAX_REQUESTS_PER_SECOND / DSP_CONCURRENCY`), grows while requests succeed (quickly until
//! the DSP first pushes back, then gently), is cut multiplicatively on throttling, and waits out
//! `Retry-After` before the next request. It never exceeds the whole budget, and what it learned
//! is kept across warm invocations, so several invocations share the DSP's limit without a 429
//! storm, one alone can use all of it, and a limit lower than the budget is found.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cut on throttling (as CUBIC and the AWS SDK: keep 70%).
const DECREASE: f64 = 0.7;
/// The cut on the first throttling, which ends the fast start.
const FIRST_DECREASE: f64 = 0.5;
/// Growth per second before the first throttling: ×1.10, so one invocation alone goes from a
/// quarter of the budget to all of it in about fifteen seconds, while K invocations that start
/// at their shares overshoot the DSP's limit only gently before their first 429.
const GROWTH: f64 = 0.10;
/// Growth per second after it, as a share of the rate where throttling happened, divided among
/// the concurrent invocations: all of them together take ~7 s to win back one cut, which keeps
/// 429s to a few percent of requests.
const PROBE: f64 = 0.04;
/// Throttles this close together are one event (the requests that were in flight together).
const QUIET: Duration = Duration::from_secs(1);
/// The slowest rate: one request every ten seconds.
const FLOOR: f64 = 0.1;

struct State {
    /// Requests per second now.
    rate: f64,
    /// The rate at the last throttling, once there was one.
    ceiling: Option<f64>,
    /// The earliest start of the next request.
    next: Instant,
    /// No request starts before this (`Retry-After`).
    paused_until: Instant,
    /// When the rate last changed.
    updated: Instant,
    /// When the rate was last cut.
    cut: Option<Instant>,
    /// Whether a request waited for its slot since the last update: growth only counts while
    /// the rate, not the work available, is what limits sending.
    limited: bool,
    /// The latest slot handed out: while it is ahead, a request is waiting for it.
    last_slot: Instant,
}

/// The pacer: a reservation per request, spaced by the current rate.
pub struct Pacer {
    budget: f64,
    concurrency: f64,
    state: Mutex<State>,
}

impl Pacer {
    /// A pacer for a deployment budget of `budget` requests per second shared by `concurrency`
    /// invocations.
    pub fn new(budget: u32, concurrency: u32) -> Self {
        let budget = f64::from(budget.max(1));
        let concurrency = f64::from(concurrency.max(1));
        let now = Instant::now();
        Self {
            budget,
            concurrency,
            state: Mutex::new(State {
                rate: (budget / concurrency).max(FLOOR),
                ceiling: None,
                next: now,
                paused_until: now,
                updated: now,
                cut: None,
                limited: false,
                last_slot: now,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests per second now.
    pub fn rate(&self) -> f64 {
        self.state().rate
    }

    /// Reserves the next slot and returns when it starts.
    pub fn reserve(&self) -> Instant {
        let now = Instant::now();
        let mut s = self.state();
        if s.next <= now {
            // Idle since the last slot: time without work to send earns no growth.
            s.updated = now;
        }
        let at = now.max(s.next).max(s.paused_until);
        if at > now {
            s.limited = true;
        }
        s.next = at + Duration::from_secs_f64(1.0 / s.rate);
        s.last_slot = at;
        at
    }

    /// Waits for the next slot. A `Retry-After` that arrives while waiting holds the request
    /// back too: it takes a new slot after the pause.
    pub async fn until_ready(&self) {
        loop {
            let at = self.reserve();
            tokio::time::sleep_until(at.into()).await;
            if self.state().paused_until <= Instant::now() {
                return;
            }
        }
    }

    /// A request went through without throttling: grow.
    pub fn succeeded(&self) {
        let now = Instant::now();
        let mut s = self.state();
        let seconds = now.saturating_duration_since(s.updated).as_secs_f64();
        s.updated = now;
        // Several requests can wait for their slots at once: each answer while one still waits
        // is limited time too.
        if !std::mem::take(&mut s.limited) && s.last_slot <= now {
            return;
        }
        s.rate = match s.ceiling {
            None => s.rate * (1.0 + GROWTH).powf(seconds),
            Some(ceiling) => s.rate + PROBE * ceiling / self.concurrency * seconds,
        }
        .min(self.budget);
    }

    /// The DSP throttled a request: cut the rate (once per burst of throttles) and wait out
    /// `retry_after` before the next request.
    pub fn throttled(&self, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut s = self.state();
        if let Some(wait) = retry_after {
            s.paused_until = s.paused_until.max(now + wait);
        }
        if s.cut
            .is_some_and(|at| now.saturating_duration_since(at) < QUIET)
        {
            return;
        }
        // The first throttle ends the fast start, whose last second overshot by up to its growth
        // (as TCP leaves slow start): a deeper cut, then the usual ones.
        let cut = if s.ceiling.is_none() {
            FIRST_DECREASE
        } else {
            DECREASE
        };
        s.ceiling = Some(s.rate);
        s.rate = (s.rate * cut).max(FLOOR);
        s.cut = Some(now);
        s.updated = now;
        s.limited = false;
        // The next slot follows the new rate.
        s.next = s.next.min(now + Duration::from_secs_f64(1.0 / s.rate));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_its_share_of_the_budget() {
        assert_eq!(Pacer::new(20, 4).rate(), 5.0);
        assert_eq!(Pacer::new(5, 1).rate(), 5.0);
        assert_eq!(Pacer::new(1, 100).rate(), FLOOR);
    }

    #[test]
    fn reservations_are_spaced_by_the_rate() {
        let p = Pacer::new(10, 1);
        let a = p.reserve();
        let b = p.reserve();
        let c = p.reserve();
        assert_eq!(b - a, Duration::from_millis(100));
        assert_eq!(c - b, Duration::from_millis(100));
    }

    #[test]
    fn throttling_cuts_once_per_burst_and_pauses_for_retry_after() {
        let p = Pacer::new(10, 1);
        p.throttled(Some(Duration::from_secs(2)));
        assert!(
            (p.rate() - 5.0).abs() < 1e-9,
            "the first cut ends the fast start: half"
        );
        p.throttled(None);
        assert!((p.rate() - 5.0).abs() < 1e-9, "a burst is one cut");
        let at = p.reserve();
        assert!(at >= Instant::now() + Duration::from_millis(1900));
        // Later throttles keep 70%.
        p.state().cut = None;
        p.throttled(None);
        assert!((p.rate() - 3.5).abs() < 1e-9);
    }

    #[test]
    fn grows_only_while_limited_and_never_above_the_budget() {
        let p = Pacer::new(8, 4);
        {
            let mut s = p.state();
            s.updated -= Duration::from_secs(100);
        }
        p.succeeded();
        assert_eq!(p.rate(), 2.0, "not limited: no growth");
        {
            let mut s = p.state();
            s.updated -= Duration::from_secs(100);
            s.limited = true;
        }
        p.succeeded();
        assert_eq!(p.rate(), 8.0, "capped at the whole budget");
    }

    #[test]
    fn every_answer_while_requests_wait_for_slots_is_limited_time() {
        let p = Pacer::new(4, 4);
        for _ in 0..3 {
            p.reserve();
        }
        for _ in 0..2 {
            p.state().updated -= Duration::from_secs(1);
            p.succeeded();
        }
        // Two seconds of growth, though the three requests reserved their slots at once.
        assert!(
            (p.rate() - (1.0 + GROWTH).powi(2)).abs() < 1e-3,
            "{}",
            p.rate()
        );
    }

    #[test]
    fn idle_time_earns_no_growth() {
        let p = Pacer::new(4, 4);
        p.state().updated -= Duration::from_secs(100);
        p.reserve();
        p.reserve();
        p.succeeded();
        assert!(p.rate() < 1.001, "{}", p.rate());
    }

    #[tokio::test]
    async fn a_retry_after_holds_back_requests_already_waiting() {
        let p = Pacer::new(10, 1);
        p.reserve();
        let start = Instant::now();
        let throttle = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            p.throttled(Some(Duration::from_millis(300)));
        };
        tokio::join!(p.until_ready(), throttle);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(320), "{waited:?}");
    }

    #[test]
    fn after_a_throttle_growth_is_gentle() {
        let p = Pacer::new(10, 2);
        p.throttled(None);
        let cut = p.rate();
        {
            let mut s = p.state();
            s.updated -= Duration::from_secs(1);
            s.limited = true;
        }
        p.succeeded();
        let grown = p.rate() - cut;
        // 4% of the ceiling (5/s) per second, shared by two invocations.
        assert!((grown - PROBE * 5.0 / 2.0).abs() < 1e-3, "{grown}");
    }
}
