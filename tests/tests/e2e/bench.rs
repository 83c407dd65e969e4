//! The benchmark in its smoke mode, so it cannot rot: it runs every section
//! with tiny sizes and must print a number in each. It never judges the
//! numbers (speed is shown by `scripts/bench` and BENCHMARKS.md).

#[test]
fn the_benchmark_runs_every_section_and_reports_numbers() {
    let out = std::process::Command::new(opsqueue_tests::binary("opsqueue-bench"))
        .arg("--smoke")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run opsqueue-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for section in [
        "## 1. Raw",
        "## 2. Enqueue",
        "## 3. Drain",
        "## 4. Sustained",
        "## 5. Pickup",
        "## 6. Cost",
        "## 7. Scale",
        "## 8. Workflows",
        "## 9. One remote worker",
        "## 10. Dashboard",
        "## 11. Enqueue (64 clients) with",
        "## 12. Events delivered",
    ] {
        let body = stdout
            .split(section)
            .nth(1)
            .unwrap_or_else(|| panic!("no {section:?} in\n{stdout}"));
        let body = body.split("\n## ").next().unwrap();
        let numbers = body
            .lines()
            .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
            .skip(1)
            .flat_map(|l| l.split('|'))
            .filter(|cell| cell.trim().trim_end_matches(" %").parse::<f64>().is_ok())
            .count();
        assert!(numbers > 0, "{section} printed no numbers:\n{body}");
    }
}
