//! `leadflow-bench --quick` runs to the end by itself and reports every figure: present and
//! positive (no threshold is asserted: the numbers of a debug build on a busy machine mean
//! nothing, the harness working end to end does).

use std::process::Command;

/// The figures a run without PostgreSQL must report.
const FIGURES: &[&str] = &[
    "ingestion.batch_activities_per_sec",
    "ingestion.track_rps",
    "ingestion.track_p99_us",
    "ingestion.track_cpu_us_per_call",
    "ingestion.track_p50_one_in_flight_us",
    "pipeline.end_to_end_activities_per_sec",
    "pipeline.cpu_us_per_activity",
    "scoring.get_score_rps",
    "scoring.get_score_p50_fixed_rate_us",
    "scoring.get_score_p99_fixed_rate_us",
    "scoring.get_score_p50_one_in_flight_us",
    "scoring.batch_get_scores_rps",
    "scoring.batch_get_scores_ids_per_sec",
    "scoring.batch_get_scores_p50_fixed_rate_us",
    "scoring.batch_get_scores_p99_fixed_rate_us",
    "scoring.rescore_facts_per_sec",
    "scoring.rescore_cpu_ns_per_fact",
    "suite.peak_rss_mib",
];

#[test]
fn quick_run_reports_every_figure() {
    let report = std::env::temp_dir().join(format!(
        "leadflow-bench-quick-{}/report.json",
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_leadflow-bench"))
        .args(["--quick", "--report"])
        .arg(&report)
        .env_remove("LEADFLOW_BENCH_POSTGRES_URL")
        .output()
        .expect("run leadflow-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "leadflow-bench failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("| figure | Leadflow |"),
        "no table:\n{stdout}"
    );

    let text = std::fs::read_to_string(&report).expect("report written");
    let json: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    let figures = json["figures"].as_array().expect("figures");
    for id in FIGURES {
        let figure = figures
            .iter()
            .find(|f| f["id"] == *id)
            .unwrap_or_else(|| panic!("figure {id} missing from {text}"));
        let value = figure["value"].as_f64().expect("value is a number");
        assert!(value > 0.0, "figure {id} is {value}");
        if let Some(ratio) = figure["ratio"].as_f64() {
            assert!(ratio > 0.0, "ratio of {id} is {ratio}");
        }
    }
    for figure in figures {
        assert!(
            figure["value"].as_f64().is_some_and(|v| v > 0.0),
            "{figure}"
        );
    }
    assert_eq!(json["missing"].as_array().map(Vec::len), Some(0), "{text}");
    assert_eq!(json["failed"].as_array().map(Vec::len), Some(0), "{text}");
    for (name, rate) in [
        ("echo", &json["ceilings"]["echo"]["rate"]),
        ("echo one in flight", &json["ceilings"]["echo_one"]["rate"]),
        (
            "echo at the fixed rate",
            &json["ceilings"]["echo_fixed"]["rate"],
        ),
        (
            "echo via the stack",
            &json["ceilings"]["echo_stack"]["rate"],
        ),
        (
            "sqlite insert",
            &json["ceilings"]["sqlite_insert"]["phase"]["items_per_sec"],
        ),
    ] {
        assert!(rate.as_f64().is_some_and(|r| r > 0.0), "{name}: {rate}");
    }
    let errors = json["leadflow"]["sqlite"]["batch"]["errors"].as_u64();
    assert_eq!(errors, Some(0), "batch errors: {text}");
    let _ = std::fs::remove_dir_all(report.parent().expect("folder"));
}
