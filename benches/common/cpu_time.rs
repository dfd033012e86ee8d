//! Criterion measurements in CPU time instead of wall time, for benchmarks
//! on a shared machine: other processes' work does not dilute them (it still
//! disturbs caches). Included by path from the benches that use it.

#![allow(dead_code)]

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): a rate per core.
pub struct ThreadCpuTime;

/// CPU time of the whole process (`CLOCK_PROCESS_CPUTIME_ID`): counts the
/// work a benchmark hands to background threads too (sled's flushers).
pub struct ProcessCpuTime;

/// The time of `clock` now.
pub fn now(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock})");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

macro_rules! cpu_measurement {
    ($name:ident, $clock:expr) => {
        impl Measurement for $name {
            type Intermediate = Duration;
            type Value = Duration;

            fn start(&self) -> Duration {
                now($clock)
            }
            fn end(&self, start: Duration) -> Duration {
                now($clock).saturating_sub(start)
            }
            fn add(&self, a: &Duration, b: &Duration) -> Duration {
                *a + *b
            }
            fn zero(&self) -> Duration {
                Duration::ZERO
            }
            fn to_f64(&self, value: &Duration) -> f64 {
                value.as_nanos() as f64
            }
            fn formatter(&self) -> &dyn ValueFormatter {
                WallTime.formatter()
            }
        }
    };
}

cpu_measurement!(ThreadCpuTime, libc::CLOCK_THREAD_CPUTIME_ID);
cpu_measurement!(ProcessCpuTime, libc::CLOCK_PROCESS_CPUTIME_ID);
