//! The per-request metrics, counted per thread and summed when scraped:
//! `fluxgate_requests_total`, `fluxgate_decisions_total`,
//! `fluxgate_request_seconds`, `fluxgate_requests_in_flight` and
//! `fluxgate_upstream_seconds`.
//!
//! Through the metrics registry each of these is an atomic every serving
//! thread writes: every request moved their cache lines between cores
//! (about a dozen read-modify-writes), and each histogram sample was kept
//! in a shared list until folded into its buckets. Here each thread counts
//! into a [`Shard`] of its own with plain loads and stores (one writer),
//! buckets included, and [`render`] sums the shards when `/metrics` is
//! scraped. The counts are exact: nothing waits for a flush.
//!
//! A thread claims a shard when it first counts and gives it back when it
//! ends; the next thread to start takes it over, counts and all, so the
//! shards are as many as threads ever counted at once. Counting while a
//! thread's own storage is being torn down (a request dropped with its
//! runtime) goes to one shared shard, behind a lock.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use super::{LabelKey, RequestLabels, Status, label_key};

/// The latency histograms' bucket bounds, in seconds (the registry's
/// histograms use the same).
pub(crate) const BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Adds `n` to a value only this thread writes (see the module).
fn bump(value: &AtomicU64, n: u64) {
    value.store(
        value.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// One thread's latency histogram: a count per bucket (the last past every
/// bound) and the sum of the samples.
#[derive(Debug, Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum's `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    fn record(&self, seconds: f64) {
        // The first bound at or above the sample (`le`).
        let bucket = BUCKETS.partition_point(|&bound| bound < seconds);
        if let Some(count) = self.counts.get(bucket) {
            bump(count, 1);
        }
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed)) + seconds;
        self.sum.store(sum.to_bits(), Ordering::Relaxed);
    }

    /// Adds this histogram's counts into `total`.
    fn add_to(&self, total: &mut Totals) {
        for (sum, count) in total.counts.iter_mut().zip(&self.counts) {
            *sum += count.load(Ordering::Relaxed);
        }
        total.sum += f64::from_bits(self.sum.load(Ordering::Relaxed));
    }
}

/// Histograms summed over the shards.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

/// The requests of one label set counted on one thread.
#[derive(Debug)]
struct Series {
    labels: RequestLabels,
    requests: AtomicU64,
    seconds: Histogram,
}

/// One thread's counts.
#[derive(Debug, Default)]
struct Shard {
    /// Held by a living thread (or the shared fallback).
    claimed: AtomicBool,
    /// Requests begun here minus requests ended here: a request that
    /// moved threads (work-stealing) begins on one shard and ends on
    /// another, and the sum is right.
    in_flight: AtomicI64,
    upstream: Histogram,
    /// Every label set counted here; appended by the owner, read by
    /// [`render`].
    series: Mutex<Vec<Arc<Series>>>,
}

/// Most label sets a shard keeps; a request of another is counted with the
/// status `other`. The label values are fixed sets but for the status,
/// which the upstream chooses among 500; past this many, the upstream's
/// statuses are taken to be noise for good (a shard keeps its label sets
/// when it passes to another thread).
const MAX_SERIES: usize = 2048;

/// Every shard ever claimed.
static SHARDS: Mutex<Vec<Arc<Shard>>> = Mutex::new(Vec::new());

/// A thread's shard and its label sets, by key.
#[derive(Debug)]
struct Local {
    shard: Arc<Shard>,
    series: hashbrown::HashMap<LabelKey, Arc<Series>>,
}

impl Local {
    /// Takes over a shard given back by an ended thread, or adds one.
    fn claim() -> Self {
        let mut shards = SHARDS.lock();
        let free = shards
            .iter()
            .find(|shard| !shard.claimed.swap(true, Ordering::Acquire))
            .cloned();
        let shard = free.unwrap_or_else(|| {
            let shard = Arc::new(Shard {
                claimed: AtomicBool::new(true),
                ..Shard::default()
            });
            shards.push(Arc::clone(&shard));
            shard
        });
        let series = shard
            .series
            .lock()
            .iter()
            .map(|series| (label_key(&series.labels), Arc::clone(series)))
            .collect();
        Self { shard, series }
    }

    fn series(&mut self, mut labels: RequestLabels) -> &Series {
        labels.status = labels.status.counted();
        if self.series.len() >= MAX_SERIES && !self.series.contains_key(&label_key(&labels)) {
            labels.status = Status::Other;
        }
        let shard = &self.shard;
        self.series.entry(label_key(&labels)).or_insert_with(|| {
            let series = Arc::new(Series {
                labels,
                requests: AtomicU64::new(0),
                seconds: Histogram::default(),
            });
            shard.series.lock().push(Arc::clone(&series));
            series
        })
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // Everything this thread wrote happens before the next claim.
        self.shard.claimed.store(false, Ordering::Release);
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// The shard counted into when a thread's own is unavailable; the lock
/// keeps it to one writer at a time.
static SHARED: LazyLock<Mutex<Local>> = LazyLock::new(|| Mutex::new(Local::claim()));

/// Counts with this thread's shard (claimed on first use), or the shared
/// one while this thread's storage is being torn down.
fn count(update: impl Fn(&mut Local)) {
    let counted = LOCAL.try_with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return false;
        };
        update(local.get_or_insert_with(Local::claim));
        true
    });
    if counted != Ok(true) {
        update(&mut SHARED.lock());
    }
}

/// One finished request: `fluxgate_requests_total` (by API, route, action
/// and status), `fluxgate_decisions_total` (by API and decision) and
/// `fluxgate_request_seconds` (by API).
pub fn count_request(labels: RequestLabels, seconds: f64) {
    count(|local| {
        let series = local.series(labels);
        bump(&series.requests, 1);
        series.seconds.record(seconds);
    });
}

/// Adds `delta` to `fluxgate_requests_in_flight`.
pub fn in_flight(delta: i64) {
    count(|local| {
        let value = &local.shard.in_flight;
        value.store(
            value.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    });
}

/// One wait for an upstream's response head: `fluxgate_upstream_seconds`.
pub fn upstream_seconds(seconds: f64) {
    count(|local| local.shard.upstream.record(seconds));
}

/// The five metrics, summed over every shard, in Prometheus' text format.
pub(crate) fn render(out: &mut String) {
    let mut in_flight = 0i64;
    let mut upstream = Totals::default();
    let mut requests: BTreeMap<(&str, &str, &str, Status), u64> = BTreeMap::new();
    let mut decisions: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut seconds: BTreeMap<&str, Totals> = BTreeMap::new();
    for shard in SHARDS.lock().iter() {
        in_flight = in_flight.wrapping_add(shard.in_flight.load(Ordering::Relaxed));
        shard.upstream.add_to(&mut upstream);
        for series in shard.series.lock().iter() {
            let RequestLabels {
                api,
                route,
                action,
                decision,
                status,
            } = series.labels;
            let n = series.requests.load(Ordering::Relaxed);
            *requests.entry((api, route, action, status)).or_default() += n;
            *decisions.entry((api, decision)).or_default() += n;
            series.seconds.add_to(seconds.entry(api).or_default());
        }
    }

    header(
        out,
        "fluxgate_requests_in_flight",
        "gauge",
        "Requests being handled",
    );
    // A request that moved threads may be seen ended before it is seen begun.
    let _ = writeln!(out, "fluxgate_requests_in_flight {}", in_flight.max(0));

    header(
        out,
        "fluxgate_requests_total",
        "counter",
        "Requests answered, by API, route, action decided and status",
    );
    // Label values are written as they are: they come from fixed sets of
    // plain words (and digits), never from a request.
    debug_assert!(requests.keys().all(|(api, route, action, _)| {
        [api, route, action]
            .iter()
            .all(|v| v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    }));
    for ((api, route, action, status), n) in &requests {
        let _ = writeln!(
            out,
            "fluxgate_requests_total{{api=\"{api}\",route=\"{route}\",action=\"{action}\",status=\"{}\"}} {n}",
            status.label()
        );
    }

    header(
        out,
        "fluxgate_decisions_total",
        "counter",
        "Requests answered, by API and decision (allow, deny, error, public)",
    );
    for ((api, decision), n) in &decisions {
        let _ = writeln!(
            out,
            "fluxgate_decisions_total{{api=\"{api}\",decision=\"{decision}\"}} {n}"
        );
    }

    header(
        out,
        "fluxgate_request_seconds",
        "histogram",
        "Time from a request's head to its response head, by API",
    );
    for (api, totals) in &seconds {
        histogram(
            out,
            "fluxgate_request_seconds",
            &format!("api=\"{api}\","),
            totals,
        );
    }

    header(
        out,
        "fluxgate_upstream_seconds",
        "histogram",
        "Time an upstream took to send a response head",
    );
    histogram(out, "fluxgate_upstream_seconds", "", &upstream);
}

/// A counter without labels, with its `# HELP` and `# TYPE` lines.
pub(crate) fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A histogram's lines; `labels` ends with a comma when not empty.
fn histogram(out: &mut String, name: &str, labels: &str, totals: &Totals) {
    let mut cumulative = 0u64;
    for (bound, count) in BUCKETS.iter().zip(&totals.counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
    }
    let total: u64 = totals.counts.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {total}");
    let plain = labels.trim_end_matches(',');
    let braces = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!("{{{s}}}")
        }
    };
    let _ = writeln!(out, "{name}_sum{} {}", braces(plain), totals.sum);
    let _ = writeln!(out, "{name}_count{} {total}", braces(plain));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(api: &'static str, status: u16) -> RequestLabels {
        RequestLabels {
            api,
            route: "v1_write",
            action: "write",
            decision: "allow",
            status: Status::Http(status),
        }
    }

    fn rendered() -> String {
        let mut text = String::new();
        render(&mut text);
        text
    }

    fn value(text: &str, line_start: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
    }

    #[test]
    fn counts_from_every_thread_are_summed_when_rendered() {
        // Label values no other test uses: the shards are process-wide.
        let api = "test_threads";
        let before = rendered();
        assert!(!before.contains(api));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        count_request(labels(api, 204), 0.003);
                    }
                    count_request(labels(api, 500), 20.0);
                    upstream_seconds(0.0001);
                    // Begun here, ended on another thread below.
                    in_flight(1);
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("counting thread");
        }
        let ender = std::thread::spawn(|| (0..4).for_each(|_| in_flight(-1)));
        ender.join().expect("ending thread");

        let text = rendered();
        let requests =
            format!("fluxgate_requests_total{{api=\"{api}\",route=\"v1_write\",action=\"write\",");
        assert_eq!(value(&text, &format!("{requests}status=\"204\"}}")), 1000.0);
        assert_eq!(value(&text, &format!("{requests}status=\"500\"}}")), 4.0);
        let decisions = format!("fluxgate_decisions_total{{api=\"{api}\",decision=\"allow\"}}");
        assert_eq!(value(&text, &decisions), 1004.0);
        let bucket = |le: &str| {
            value(
                &text,
                &format!("fluxgate_request_seconds_bucket{{api=\"{api}\",le=\"{le}\"}}"),
            )
        };
        // Cumulative: 0.003 s is counted from the 0.005 bucket up.
        assert_eq!(bucket("0.0025"), 0.0);
        assert_eq!(bucket("0.005"), 1000.0);
        assert_eq!(bucket("10"), 1000.0);
        assert_eq!(bucket("+Inf"), 1004.0);
        let count = format!("fluxgate_request_seconds_count{{api=\"{api}\"}}");
        assert_eq!(value(&text, &count), 1004.0);
        let sum = value(
            &text,
            &format!("fluxgate_request_seconds_sum{{api=\"{api}\"}}"),
        );
        assert!((sum - (1000.0 * 0.003 + 80.0)).abs() < 1e-6, "{sum}");
        assert!(value(&text, "fluxgate_upstream_seconds_count") >= 4.0);
        assert!(text.contains("# TYPE fluxgate_request_seconds histogram"));
    }

    #[test]
    fn grpc_statuses_outside_grpcs_codes_are_unknown_and_never_print_as_http_ones() {
        let api = "test_statuses";
        std::thread::spawn(move || {
            count_request(labels(api, 200), 0.001);
            for code in [200, -1, 17, i32::MAX, 2] {
                count_request(
                    RequestLabels {
                        status: Status::Grpc(code),
                        ..labels(api, 0)
                    },
                    0.001,
                );
            }
        })
        .join()
        .expect("counting thread");
        let text = rendered();
        let series =
            format!("fluxgate_requests_total{{api=\"{api}\",route=\"v1_write\",action=\"write\",");
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&series)).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(value(&text, &format!("{series}status=\"200\"}}")), 1.0);
        assert_eq!(value(&text, &format!("{series}status=\"2\"}}")), 5.0);
    }

    #[test]
    fn label_sets_past_the_most_a_shard_keeps_are_counted_as_other() {
        // A shard of the test's own: a full one among the process' shards
        // would turn other tests' new label sets into `other`.
        let mut local = Local {
            shard: Arc::new(Shard::default()),
            series: hashbrown::HashMap::new(),
        };
        // 5 routes by 500 HTTP statuses: more label sets than a shard keeps.
        // (One static, as the proxy's labels are: keys compare addresses.)
        static ROUTES: [&str; 5] = ["r1", "r2", "r3", "r4", "r5"];
        let sets: Vec<RequestLabels> = ROUTES
            .into_iter()
            .flat_map(|route| {
                (100..600).map(move |status| RequestLabels {
                    route,
                    ..labels("test_overflow", status)
                })
            })
            .collect();
        assert!(sets.len() > MAX_SERIES);
        let statuses: Vec<Status> = sets
            .iter()
            .map(|set| {
                let series = local.series(*set);
                bump(&series.requests, 1);
                series.labels.status
            })
            .collect();
        assert!(statuses[..MAX_SERIES].iter().all(|s| *s != Status::Other));
        assert!(statuses[MAX_SERIES..].iter().all(|s| *s == Status::Other));
        // A label set kept before the cap is still its own.
        assert_eq!(local.series(sets[0]).labels.status, Status::Http(100));
        let counted: u64 = local
            .shard
            .series
            .lock()
            .iter()
            .map(|s| s.requests.load(Ordering::Relaxed))
            .sum();
        assert_eq!(counted, sets.len() as u64, "every request counted");
    }

    #[test]
    fn http_statuses_outside_https_classes_are_other() {
        let mut local = Local {
            shard: Arc::new(Shard::default()),
            series: hashbrown::HashMap::new(),
        };
        for (status, counted) in [
            (100, Status::Http(100)),
            (599, Status::Http(599)),
            (600, Status::Other),
            (999, Status::Other),
        ] {
            let series = local.series(labels("test_http_statuses", status));
            assert_eq!(series.labels.status, counted, "{status}");
        }
    }

    #[test]
    fn a_thread_that_ended_gives_its_shard_to_the_next() {
        let claimed = |_: ()| {
            std::thread::spawn(|| {
                in_flight(0);
                SHARDS.lock().len()
            })
            .join()
            .expect("thread")
        };
        // Threads one after the other: each takes over a shard given back.
        // Other tests' threads may claim shards meanwhile, but not one for
        // each of these.
        let first = claimed(());
        let later = (0..50).map(|_| claimed(())).max().unwrap_or(first);
        assert!(later < first + 25, "{first} shards, then {later}");
    }

    #[test]
    fn samples_land_in_the_first_bucket_at_or_above_them() {
        let h = Histogram::default();
        for s in [0.0, 0.00005, 0.00006, 10.0, 10.5, f64::INFINITY] {
            h.record(s);
        }
        let mut t = Totals::default();
        h.add_to(&mut t);
        assert_eq!(t.counts[0], 2, "0 and 0.00005 are <= 0.00005");
        assert_eq!(t.counts[1], 1);
        assert_eq!(t.counts[16], 1, "10.0 in the le=10 bucket");
        assert_eq!(t.counts[17], 2, "past every bound");
    }
}
