//! The report: one Markdown table (direct, lite-apiserver, nginx, ratios,
//! budgets), the CPU summary line, and target/bench/report.json.

use std::path::PathBuf;

use serde_json::{json, Value};

/// One report row.
pub struct Row {
    pub metric: String,
    pub unit: &'static str,
    pub direct: Option<f64>,
    pub lite: Option<f64>,
    pub nginx: Option<f64>,
    pub budget: Option<f64>,
}

/// A row (None: no figure; budget: the goal for lite-apiserver).
pub fn row(
    metric: &str,
    unit: &'static str,
    direct: Option<f64>,
    lite: Option<f64>,
    nginx: Option<f64>,
    budget: Option<f64>,
) -> Row {
    Row {
        metric: metric.to_owned(),
        unit,
        direct,
        lite,
        nginx,
        budget,
    }
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() => format!("{v:.2}"),
        _ => "-".to_owned(),
    }
}

/// Prints the table and writes target/bench/report.json.
pub fn report(rows: &[Row], quick: bool) {
    println!("\n| metric | unit | direct | lite-apiserver | nginx | lite/direct | lite/nginx | budget (lite) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => {
                format!("{:.2}", a / b)
            }
            _ => "-".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.metric,
            r.unit,
            fmt(r.direct),
            fmt(r.lite),
            fmt(r.nginx),
            ratio(r.lite, r.direct),
            ratio(r.lite, r.nginx),
            fmt(r.budget)
        );
    }
    println!(
        "\n({} run; medians over alternating rounds)",
        if quick { "quick" } else { "full" }
    );
    let num = |v: Option<f64>| {
        v.filter(|v| v.is_finite())
            .map_or(Value::Null, |v| json!(v))
    };
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| json!({"metric": r.metric, "unit": r.unit, "direct": num(r.direct), "lite": num(r.lite), "nginx": num(r.nginx), "budget": num(r.budget)}))
        .collect();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join("report.json"),
        serde_json::to_vec_pretty(&json_rows).unwrap(),
    );
    println!("report: {}", out.join("report.json").display());
}

/// The CPU figures side by side (issue 11): instructions per GET and the
/// throughput ratios, lite-apiserver against nginx.
pub fn summary(rows: &[Row]) {
    let find = |prefix: &str| rows.iter().find(|r| r.metric.starts_with(prefix));
    let ratio = |r: Option<&Row>| match r.map(|r| (r.lite, r.nginx)) {
        Some((Some(l), Some(n))) if n != 0.0 => format!("{:.2}", l / n),
        _ => "-".to_owned(),
    };
    let instr = find("instructions per proxied");
    println!(
        "CPU: instructions per GET lite {} / nginx {} = {} (goal <= 1.00); throughput lite/nginx c=16 {}, c=64 {} (goal >= 0.90)",
        fmt(instr.and_then(|r| r.lite)),
        fmt(instr.and_then(|r| r.nginx)),
        ratio(instr),
        ratio(find("GET 2 KB throughput (c=16)")),
        ratio(find("GET 2 KB throughput (c=64)")),
    );
}
