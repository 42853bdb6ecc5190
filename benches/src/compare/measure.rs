//! Closed-loop measurement shared by both sides of `chronik-bench compare`:
//! each client keeps one request in flight; only requests started after
//! the warm-up and finished before the deadline count.

use hdrhistogram::Histogram;
use std::future::Future;
use std::time::{Duration, Instant};

/// What one client (or a whole workload, once merged) measured.
pub struct Tally {
    /// Request latencies in microseconds.
    pub latencies: Histogram<u64>,
    /// Operations done: records for produces and puts, reads for reads.
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latencies: Histogram::new(3).expect("3 significant digits is a valid histogram"),
            ops: 0,
            errors: 0,
            first_error: None,
        }
    }
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        // Both histograms auto-resize: adding cannot overflow their range.
        let _ = self.latencies.add(&other.latencies);
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn p50_ms(&self) -> f64 {
        self.latencies.value_at_quantile(0.5) as f64 / 1000.0
    }

    pub fn p99_ms(&self) -> f64 {
        self.latencies.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// The measured window of one turn.
#[derive(Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    /// A window that opens after `warmup` and lasts `length`.
    pub fn after(warmup: Duration, length: Duration) -> Window {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + length,
        }
    }
}

/// Runs `op` back to back until the window closes. `op` returns how many
/// operations one request did (records in a produce batch).
pub async fn closed_loop<F, Fut>(window: Window, mut op: F) -> Tally
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, String>>,
{
    let mut tally = Tally::default();
    loop {
        let t = Instant::now();
        if t >= window.end {
            return tally;
        }
        let r = op().await;
        let done = Instant::now();
        if t < window.start || done > window.end {
            continue;
        }
        match r {
            Ok(n) => {
                let _ = tally
                    .latencies
                    .record(done.duration_since(t).as_micros() as u64);
                tally.ops += n;
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
            }
        }
    }
}

/// The clients' tallies merged into one; a client task that died counts
/// as an error.
pub async fn merged(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut all = Tally::default();
    for t in tasks {
        match t.await {
            Ok(tally) => all.merge(tally),
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert(e.to_string());
            }
        }
    }
    all
}

/// CPU seconds (user and system) a process has used, from `/proc`.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may hold spaces: fields count from the
    // last ')'. utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("/proc/{pid}/stat: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat: field {} unreadable", i + 3))
    };
    // Fields after ')' start at field 3: utime is index 11, stime 12.
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks_per_second())
}

/// `USER_HZ`: 100 on every Linux this runs on; `getconf` says if not.
fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A process's resident memory now (`VmRSS`) and at its peak (`VmHWM`),
/// in bytes, from `/proc/PID/status`.
pub fn memory_bytes(pid: u32) -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    parse_memory(&status).ok_or_else(|| format!("/proc/{pid}/status: no VmRSS or VmHWM line"))
}

/// `(VmRSS, VmHWM)` in bytes from the text of `/proc/PID/status`.
fn parse_memory(status: &str) -> Option<(u64, u64)> {
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let value = line[key.len()..].trim().strip_suffix("kB")?.trim();
        value.parse::<u64>().ok().map(|k| k * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// CPU seconds of several processes together.
pub fn cpu_seconds_all(pids: &[u32]) -> Result<f64, String> {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_and_peak_memory_are_read_from_proc_status() {
        let status = "Name:\tchronik-node\nVmPeak:\t  999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t4\n";
        assert_eq!(parse_memory(status), Some((1024 * 1024, 2048 * 1024)));
        assert_eq!(parse_memory("VmRSS:\t12 kB\n"), None, "no peak line");
        assert_eq!(parse_memory("VmRSS:\tmany kB\nVmHWM:\t1 kB\n"), None);
        let (rss, peak) = memory_bytes(std::process::id()).expect("this process's status");
        assert!(rss > 0 && peak >= rss, "rss {rss}, peak {peak}");
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let me = std::process::id();
        let before = cpu_seconds(me).expect("own /proc entry");
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = cpu_seconds(me).expect("own /proc entry");
        assert!(after > before, "{before} -> {after}");
    }

    #[tokio::test]
    async fn only_requests_inside_the_window_count() {
        let window = Window::after(Duration::from_millis(50), Duration::from_millis(100));
        let mut calls = 0u64;
        let tally = closed_loop(window, || {
            calls += 1;
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(2)
            }
        })
        .await;
        // Calls made during the warm-up (at least the first) do not count;
        // every counted call did 2 operations.
        assert!(tally.ops > 0);
        assert!(calls > tally.ops / 2, "warm-up calls were not counted");
        assert_eq!(tally.latencies.len(), tally.ops / 2);
    }
}
