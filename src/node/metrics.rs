//! The node's Prometheus metrics, kept by hand (a few counters and one
//! histogram need no library): requests by route, method and status, request
//! latency by route. The backend adds its own (raft groups) after these.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let at = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[at] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Default)]
struct State {
    /// (route, method, status) -> requests.
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
}

/// The node's metrics registry.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    /// Records one answered request; `route` is the matched route pattern
    /// (`/v1/collections/{c}/docs/{id}`), never the raw path.
    pub fn record(&self, route: &str, method: &str, status: u16, took: Duration) {
        let mut state = self.state.lock();
        *state
            .requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        state
            .latency
            .entry(route.to_string())
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition (format 0.0.4) of the API's metrics.
    pub fn render(&self) -> String {
        let state = self.state.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP stratosdb_http_requests_total HTTP requests answered, by route, method and status.\n# TYPE stratosdb_http_requests_total counter"
        );
        for ((route, method, status), n) in &state.requests {
            let _ = writeln!(
                out,
                "stratosdb_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        let _ = writeln!(
            out,
            "# HELP stratosdb_http_request_duration_seconds Time to answer an HTTP request, by route.\n# TYPE stratosdb_http_request_duration_seconds histogram"
        );
        for (route, h) in &state.latency {
            let route = escape(route);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(
                    out,
                    "stratosdb_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "stratosdb_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "stratosdb_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "stratosdb_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out
    }
}

/// A label value escaped as the text format wants.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.record("/v1/sql", "POST", 200, Duration::from_micros(300));
        m.record("/v1/sql", "POST", 400, Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains(
            "stratosdb_http_requests_total{route=\"/v1/sql\",method=\"POST\",status=\"400\"} 1"
        ));
        assert!(text.contains(
            "stratosdb_http_request_duration_seconds_bucket{route=\"/v1/sql\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "stratosdb_http_request_duration_seconds_bucket{route=\"/v1/sql\",le=\"0.05\"} 2"
        ));
    }
}
