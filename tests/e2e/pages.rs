//! The pages a person reads, rendered by headless Chromium: what the DOM
//! shows, a screenshot, and that the page fetches nothing.

use crate::browser_fixture::render;
use seawall_proto::v1::{Drill, FailoverStep};

fn journal() -> Drill {
    let step = |name: &str, state: &str, from: i64, to: i64| FailoverStep {
        name: name.into(),
        state: state.into(),
        started_unix_ms: 1_796_000_000_000 + from,
        ended_unix_ms: 1_796_000_000_000 + to,
        detail: format!("{name}: as the journal says"),
        evidence: [("snapshot".to_string(), "3fa9c1d2".to_string())].into(),
        attempts: 1,
    };
    Drill {
        id: "shop-complete-outage-1796000000000".into(),
        scenario: "complete outage".into(),
        service: "shop".into(),
        kind: "restore".into(),
        region: "eu-west-1".into(),
        rto_objective_ms: 60_000,
        rpo_objective_ms: 3_600_000,
        steps: vec![
            step("restore db", "done", 0, 48_000),
            step("check db", "done", 48_000, 66_000),
            step("restore cache", "done", 0, 9_000),
            step("teardown", "done", 66_000, 67_500),
        ],
        state: "finished".into(),
        verdict: "missed".into(),
        reasons: vec!["RTO 1m 7s is over the objective of 1m".into()],
        rto_ms: Some(67_500),
        rpo_ms: Some(1_200_000),
        started_unix_ms: 1_796_000_000_000,
        finished_unix_ms: 1_796_000_067_500,
        requested_by: "schedule nightly".into(),
        ..Default::default()
    }
}

#[test]
fn the_drill_report_renders_its_verdict_objectives_and_phases_and_fetches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, seawall_coordinator::drills::report::html(&journal())).unwrap();
    let png = dir.path().join("report.png");
    let seen = render(&page, Some(&png));

    assert!(
        seen.dom
            .contains("<span id=\"verdict\" class=\"verdict missed\">MISSED</span>"),
        "{}",
        seen.dom
    );
    for (objective, row) in [
        (
            "RTO",
            "<td>RTO</td><td>1m</td><td>1m 7s</td><td class=\"miss\">missed</td>",
        ),
        (
            "RPO",
            "<td>RPO</td><td>1h</td><td>20m</td><td class=\"ok\">met</td>",
        ),
    ] {
        assert!(
            seen.dom
                .contains(&format!("data-objective=\"{objective}\">{row}")),
            "{objective} row missing from:\n{}",
            seen.dom
        );
    }
    for phase in ["restore db", "check db", "restore cache", "teardown"] {
        assert!(
            seen.dom
                .contains(&format!("data-step=\"{phase}\" data-state=\"done\"")),
            "phase {phase} missing from the timeline"
        );
    }
    // SEAWALL_KEEP_SCREENSHOT=FILE keeps the picture, to look at it.
    if let Ok(keep) = std::env::var("SEAWALL_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
    let shot = std::fs::read(&png).unwrap();
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 10_000,
        "no screenshot ({} bytes)",
        shot.len()
    );
    assert_eq!(seen.page_requests, Vec::<String>::new());

    // The check can fail: a page with one picture from elsewhere is seen
    // asking for it.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<!doctype html><p>x</p><img src=\"http://seawall-control.invalid/x.png\">",
    )
    .unwrap();
    let seen = render(&control, None);
    assert!(
        seen.page_requests
            .iter()
            .any(|r| r.contains("seawall-control.invalid")),
        "{:?}",
        seen.page_requests
    );
}
