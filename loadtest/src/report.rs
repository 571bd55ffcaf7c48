//! Results: HDR histograms (µs, 3 significant digits) that travel between processes as
//! value/count pairs, percentiles, and the report every scenario prints — a human table,
//! or one JSON object with `--json`.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Highest value a histogram tracks: 10 minutes in µs (longer is clamped).
const MAX_US: u64 = 600_000_000;

/// A histogram of microseconds.
#[derive(Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds"))
    }
}

impl std::fmt::Debug for Hist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hist(n={})", self.0.len())
    }
}

impl Hist {
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// Compact form for the worker → coordinator pipe.
    pub fn dump(&self) -> HistDump {
        HistDump(
            self.0
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn load(d: &HistDump) -> Self {
        let mut h = Self::default();
        for &(v, n) in &d.0 {
            let _ = h.0.record_n(v.clamp(1, MAX_US), n);
        }
        h
    }

    pub fn percentiles(&self) -> Percentiles {
        let h = &self.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min_us: h.min(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// `(value µs, count)` pairs of the non-empty buckets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistDump(pub Vec<(u64, u64)>);

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Percentiles {
    fn human(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.count
        )
    }
}

/// Microseconds as milliseconds with µs precision.
pub fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// One scenario's outcome: parameters, named metrics (flat keys, nested percentile
/// objects) and the human rows in the order they were added.
#[derive(Debug, Default)]
pub struct Report {
    scenario: String,
    params: Map<String, Value>,
    metrics: Map<String, Value>,
    rows: Vec<Row>,
    pub notes: Vec<String>,
}

#[derive(Debug)]
enum Row {
    Section(String),
    Item(String, String),
}

impl Report {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.into(),
            ..Self::default()
        }
    }

    pub fn param(&mut self, key: &str, value: impl Into<Value>) {
        self.params.insert(key.into(), value.into());
    }

    pub fn section(&mut self, title: &str) {
        self.rows.push(Row::Section(title.into()));
    }

    /// A number: `key` in JSON, `label` and `unit` in the table.
    pub fn num(&mut self, key: &str, label: &str, value: f64, unit: &str) {
        self.metrics.insert(key.into(), json_num(value));
        let shown = if value.fract() == 0.0 && value.abs() < 1e15 {
            format!("{value:.0}")
        } else if value.abs() >= 100.0 {
            format!("{value:.1}")
        } else {
            format!("{value:.3}")
        };
        self.rows.push(Row::Item(
            label.into(),
            if unit.is_empty() {
                shown
            } else {
                format!("{shown} {unit}")
            },
        ));
    }

    pub fn text(&mut self, key: &str, label: &str, value: &str) {
        self.metrics.insert(key.into(), value.into());
        self.rows.push(Row::Item(label.into(), value.into()));
    }

    pub fn value(&mut self, key: &str, label: &str, value: Value) {
        self.rows.push(Row::Item(label.into(), value.to_string()));
        self.metrics.insert(key.into(), value);
    }

    pub fn percentiles(&mut self, key: &str, label: &str, p: &Percentiles) {
        self.metrics
            .insert(key.into(), serde_json::to_value(p).unwrap_or(Value::Null));
        self.rows.push(Row::Item(label.into(), p.human()));
    }

    pub fn metric(&self, key: &str) -> Option<&Value> {
        self.metrics.get(key)
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "scenario": self.scenario,
            "params": self.params,
            "metrics": self.metrics,
            "notes": self.notes,
        })
    }

    pub fn human(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| match r {
                Row::Item(l, _) => l.chars().count(),
                Row::Section(_) => 0,
            })
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(out, "== kurir-loadtest {} ==", self.scenario);
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect();
        let _ = writeln!(out, "params: {}", params.join(" "));
        for row in &self.rows {
            match row {
                Row::Section(t) => {
                    let _ = writeln!(out, "-- {t}");
                }
                Row::Item(l, v) => {
                    let _ = writeln!(out, "  {l:<width$}  {v}");
                }
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}

fn json_num(v: f64) -> Value {
    if v.is_finite() {
        if v.fract() == 0.0 && v.abs() < 9e15 {
            Value::from(v as i64)
        } else {
            Value::from((v * 1000.0).round() / 1000.0)
        }
    } else {
        Value::Null
    }
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_survive_the_pipe() {
        let mut h = Hist::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let back =
            Hist::load(&serde_json::from_str(&serde_json::to_string(&h.dump()).unwrap()).unwrap());
        let (a, b) = (h.percentiles(), back.percentiles());
        assert_eq!(a.count, 1000);
        assert_eq!(b.count, 1000);
        assert_eq!(a.p50_us, 500);
        assert!((b.p50_us as i64 - 500).abs() <= 1);
        assert!((b.p999_us as i64 - 999).abs() <= 1);
        let mut m = Hist::default();
        m.merge(&h);
        m.merge(&back);
        assert_eq!(m.len(), 2000);
    }

    #[test]
    fn report_renders_both_ways() {
        let mut r = Report::new("x");
        r.param("clients", 10);
        r.section("s");
        r.num("rate", "rate", 1234.5678, "/s");
        r.num("lost", "lost", 0.0, "");
        let mut h = Hist::default();
        h.record(1500);
        r.percentiles("delay", "delay", &h.percentiles());
        let j = r.to_json();
        assert_eq!(j["metrics"]["lost"], 0);
        assert_eq!(j["metrics"]["rate"], 1234.568);
        assert_eq!(j["metrics"]["delay"]["p50_us"], 1500);
        let t = r.human();
        assert!(t.contains("1234.6 /s"), "{t}");
        assert!(t.contains("p50 1.500 ms"), "{t}");
    }
}
