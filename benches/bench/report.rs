//! The benchmark's results: one row per measure with its samples, the
//! target from issue 7 and what bounds the figure; printed as a Markdown
//! table (ready to paste into docs/performance.md) and written as JSON.
//! No threads, no channels.

use serde_json::{json, Value};

/// Issue 7's target for a measure.
#[derive(Clone, Copy)]
pub enum Target {
    None,
    /// Latency, memory, size: lower is better.
    AtMost(f64),
    /// Throughput: higher is better.
    AtLeast(f64),
}

pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
    pub target: Target,
    pub note: String,
}

/// Nearest-rank percentile of `v` (`p` in 0..=100); NaN when empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

impl Row {
    pub fn p50(&self) -> f64 {
        percentile(&self.samples, 50.0)
    }
    pub fn p90(&self) -> f64 {
        percentile(&self.samples, 90.0)
    }
    fn verdict(&self) -> &'static str {
        let met = match self.target {
            Target::None => return "",
            Target::AtMost(l) => self.p50() <= l,
            Target::AtLeast(l) => self.p50() >= l,
        };
        if met {
            "yes"
        } else {
            "**no**"
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => "—".into(),
            Target::AtMost(l) => format!("≤ {}", fmt(l, self.unit)),
            Target::AtLeast(l) => format!("≥ {}", fmt(l, self.unit)),
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Facts about the run that are not measures (counts, settings).
    pub facts: Vec<(String, Value)>,
}

fn fmt(v: f64, unit: &str) -> String {
    if v.is_nan() {
        return "—".into();
    }
    match unit {
        "kB" | "B" => {
            let s = format!("{:.0}", v);
            // Thousands separators, as in the table.
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            format!("{out} {unit}")
        }
        _ if v >= 100.0 => format!("{v:.0} {unit}"),
        _ if v >= 10.0 => format!("{v:.1} {unit}"),
        _ => format!("{v:.2} {unit}"),
    }
}

impl Report {
    /// Adds a measure and prints it on stderr as it comes.
    pub fn add(
        &mut self,
        name: &str,
        unit: &'static str,
        samples: Vec<f64>,
        target: Target,
        note: &str,
    ) {
        let row = Row {
            name: name.into(),
            unit,
            samples,
            target,
            note: note.into(),
        };
        eprintln!(
            "  {:<52} p50 {:>14}  p90 {:>14}  n={}",
            row.name,
            fmt(row.p50(), unit),
            fmt(row.p90(), unit),
            row.samples.len()
        );
        self.rows.push(row);
    }

    pub fn fact(&mut self, name: &str, v: Value) {
        eprintln!("  {name}: {v}");
        self.facts.push((name.into(), v));
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| measure | target | p50 | p90 | n | met | bounded by |\n| --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.name,
                r.target_text(),
                fmt(r.p50(), r.unit),
                fmt(r.p90(), r.unit),
                r.samples.len(),
                r.verdict(),
                r.note
            );
        }
        s
    }

    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "measure": r.name,
                    "unit": r.unit,
                    "target": match r.target {
                        Target::None => None,
                        Target::AtMost(l) | Target::AtLeast(l) => Some(l),
                    },
                    "higher_is_better": matches!(r.target, Target::AtLeast(_)),
                    "p50": r.p50(),
                    "p90": r.p90(),
                    "min": percentile(&r.samples, 0.0),
                    "max": percentile(&r.samples, 100.0),
                    "n": r.samples.len(),
                    "bounded_by": r.note,
                })
            })
            .collect();
        let facts: serde_json::Map<String, Value> = self.facts.iter().cloned().collect();
        json!({ "measures": rows, "facts": facts })
    }
}
