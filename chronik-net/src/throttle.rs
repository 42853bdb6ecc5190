//! A token bucket in bytes per second, shared by every catch-up transfer of
//! a node, so that replicas catching up (replica moves, rebuilds) never
//! take the bandwidth produce traffic needs.

use parking_lot::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// At most one second of bytes may be saved up.
const BURST: Duration = Duration::from_secs(1);

pub struct Throttle {
    bytes_per_sec: u64,
    /// (when last refilled, bytes available then; negative: owed)
    state: Mutex<(Instant, f64)>,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Self {
        Throttle {
            bytes_per_sec: bytes_per_sec.max(1),
            state: Mutex::new((Instant::now(), 0.0)),
        }
    }

    /// How long a transfer of `bytes` starting at `now` must wait to keep
    /// the rate; the bytes are counted as spent.
    pub fn reserve_at(&self, now: Instant, bytes: u64) -> Duration {
        let rate = self.bytes_per_sec as f64;
        let mut s = self.state.lock();
        let refill = now.saturating_duration_since(s.0).as_secs_f64() * rate;
        s.1 = (s.1 + refill).min(rate * BURST.as_secs_f64());
        s.0 = s.0.max(now);
        s.1 -= bytes as f64;
        if s.1 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.1 / rate)
        }
    }

    /// Waits until `bytes` more may go.
    pub async fn take(&self, bytes: u64) {
        let wait = self.reserve_at(Instant::now(), bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_rate_over_time() {
        let t = Throttle::new(1000);
        let t0 = t.state.lock().0;
        let at = |ms| t0 + Duration::from_millis(ms);
        // A burst is paid for afterwards.
        assert_eq!(t.reserve_at(at(0), 500), Duration::from_millis(500));
        assert_eq!(t.reserve_at(at(0), 500), Duration::from_millis(1000));
        assert_eq!(t.reserve_at(at(1000), 0), Duration::ZERO);
        // Savings are capped at one second's worth.
        assert_eq!(t.reserve_at(at(11_000), 1000), Duration::ZERO);
        assert_eq!(t.reserve_at(at(11_000), 1000), Duration::from_millis(1000));
    }
}
