//! A drill's report page: one self-contained HTML file (styles inline, the
//! timeline an inline SVG, nothing fetched) with the verdict at the top,
//! the objectives beside what was achieved (missed ones marked), a timeline
//! of the steps, and each step's evidence. `seawall drill report` writes it
//! and the coordinator serves the same page.

use seawall_proto::v1::{Drill, FailoverStep};
use std::fmt::Write;
use std::time::Duration;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration for people: hundredths under ten seconds, else humantime.
pub fn span(ms: i64) -> String {
    let d = Duration::from_millis(ms.max(0) as u64);
    if d < Duration::from_secs(10) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// A time in UTC, or "-" for none.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .filter(|_| ms > 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The pages' shared style sheet (inline: nothing is fetched).
pub const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#1b1f24;padding:0 1em}\
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.6em}\
.verdict{display:inline-block;padding:.25em .8em;border-radius:.3em;font-weight:700;letter-spacing:.05em;color:#fff}\
.met{background:#1a7f37}.missed{background:#bf8700}.failed{background:#cf222e}.running{background:#57606a}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #d0d7de;vertical-align:top}\
tr.missed td{background:#fff8c5}td.miss{color:#9a6700;font-weight:700}td.ok{color:#1a7f37;font-weight:700}\
.meta{color:#57606a}code{font-size:.9em}ul.reasons li{color:#cf222e}";

/// Renders the report page of `d`.
pub fn html(d: &Drill) -> String {
    let verdict = if d.verdict.is_empty() {
        "running"
    } else {
        d.verdict.as_str()
    };
    let title = if d.scenario.is_empty() {
        format!("{} drill of {}", d.kind, d.service)
    } else {
        format!("{}: {} drill of {}", d.scenario, d.kind, d.service)
    };
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} — {}</title><style>{STYLE}</style></head><body>",
        escape(&title),
        escape(verdict)
    );
    let _ = write!(
        page,
        "<p><span id=\"verdict\" class=\"verdict {v}\">{V}</span></p><h1>{}</h1>\
         <p class=\"meta\">drill <code>{}</code>, {} in {}; started {}, finished {}; requested by {}</p>",
        escape(&title),
        escape(&d.id),
        escape(&d.kind),
        escape(&d.region),
        when(d.started_unix_ms),
        when(d.finished_unix_ms),
        escape(&d.requested_by),
        v = escape(verdict),
        V = escape(&verdict.to_uppercase()),
    );
    if !d.reasons.is_empty() {
        page.push_str("<ul class=\"reasons\">");
        for r in &d.reasons {
            let _ = write!(page, "<li>{}</li>", escape(r));
        }
        page.push_str("</ul>");
    }
    page.push_str(&objectives(d));
    page.push_str("<h2>Timeline</h2>");
    page.push_str(&timeline(&d.steps, d.started_unix_ms));
    page.push_str(&steps(&d.steps, d.started_unix_ms));
    if !d.steady_state.is_empty() {
        page.push_str("<h2>Steady state before</h2><table>");
        for (k, v) in &d.steady_state {
            let _ = write!(
                page,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(k),
                escape(v)
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</body></html>\n");
    page
}

fn objectives(d: &Drill) -> String {
    let mut out = String::from(
        "<h2>Objectives</h2><table id=\"objectives\"><tr><th>objective</th><th>target</th><th>achieved</th><th></th></tr>",
    );
    for (name, target, achieved) in [
        ("RTO", d.rto_objective_ms, d.rto_ms),
        ("RPO", d.rpo_objective_ms, d.rpo_ms),
    ] {
        let (class, mark, shown) = match achieved {
            Some(a) if a > target => ("missed", "<td class=\"miss\">missed</td>", span(a)),
            Some(a) => ("", "<td class=\"ok\">met</td>", span(a)),
            None => ("missed", "<td class=\"miss\">not measured</td>", "-".into()),
        };
        let _ = write!(
            out,
            "<tr class=\"objective {class}\" data-objective=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td>{mark}</tr>",
            span(target),
            shown
        );
    }
    out.push_str("</table>");
    out
}

/// The steps as horizontal bars on a time axis from the drill's start.
fn timeline(steps: &[FailoverStep], start: i64) -> String {
    const WIDTH: f64 = 900.0;
    const LABEL: f64 = 170.0;
    const ROW: f64 = 26.0;
    let end = steps
        .iter()
        .map(|s| s.ended_unix_ms.max(s.started_unix_ms))
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let total = (end - start) as f64;
    let scale = (WIDTH - LABEL - 20.0) / total;
    let height = ROW * steps.len() as f64 + 34.0;
    let mut out = format!(
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"timeline of the drill's steps\">"
    );
    for (i, s) in steps.iter().enumerate() {
        let y = ROW * i as f64 + 4.0;
        let from = if s.started_unix_ms > 0 {
            (s.started_unix_ms - start) as f64
        } else {
            0.0
        };
        let to = if s.ended_unix_ms > 0 {
            (s.ended_unix_ms - start) as f64
        } else {
            from
        };
        let x = LABEL + from * scale;
        let w = ((to - from) * scale).max(2.0);
        let color = match s.state.as_str() {
            "done" => "#2da44e",
            "failed" => "#cf222e",
            "skipped" => "#8c959f",
            "running" => "#0969da",
            _ => "#d0d7de",
        };
        let _ = write!(
            out,
            "<g class=\"phase\" data-step=\"{n}\" data-state=\"{st}\"><title>{n}: {st}, {d}</title>\
             <text x=\"0\" y=\"{ty}\" font-size=\"13\">{n}</text>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"3\" fill=\"{color}\"/></g>",
            n = escape(&s.name),
            st = escape(&s.state),
            d = span((to - from) as i64),
            ty = y + 14.0,
            h = ROW - 8.0,
        );
    }
    // The axis: the drill's start, its middle and its end.
    let axis_y = ROW * steps.len() as f64 + 16.0;
    for frac in [0.0, 0.5, 1.0] {
        let x = LABEL + frac * (WIDTH - LABEL - 20.0);
        let _ = write!(
            out,
            "<text x=\"{x:.1}\" y=\"{axis_y:.1}\" font-size=\"11\" fill=\"#57606a\" text-anchor=\"middle\">{}</text>",
            span((frac * total) as i64)
        );
    }
    out.push_str("</svg>");
    out
}

fn steps(steps: &[FailoverStep], start: i64) -> String {
    let mut out = String::from(
        "<h2>Steps</h2><table id=\"steps\"><tr><th>step</th><th>state</th><th>at</th><th>took</th><th>what happened</th></tr>",
    );
    for s in steps {
        let at = if s.started_unix_ms > 0 {
            format!("+{}", span(s.started_unix_ms - start))
        } else {
            String::new()
        };
        let took = if s.ended_unix_ms > 0 && s.started_unix_ms > 0 {
            span(s.ended_unix_ms - s.started_unix_ms)
        } else {
            String::new()
        };
        let evidence: Vec<String> = s
            .evidence
            .iter()
            .map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(v)))
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{at}</td><td>{took}</td><td>{}{}{}</td></tr>",
            escape(&s.name),
            escape(&s.state),
            escape(&s.detail),
            if evidence.is_empty() { "" } else { "<br>" },
            evidence.join(" ")
        );
    }
    out.push_str("</table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drill() -> Drill {
        let step = |name: &str, state: &str, from: i64, to: i64| FailoverStep {
            name: name.into(),
            state: state.into(),
            started_unix_ms: 1_000_000 + from,
            ended_unix_ms: 1_000_000 + to,
            detail: format!("{name} <done>"),
            evidence: [("snapshot".to_string(), "ab12".to_string())].into(),
            attempts: 1,
        };
        Drill {
            id: "shop-restore-1".into(),
            scenario: "complete outage".into(),
            service: "shop".into(),
            kind: "restore".into(),
            region: "eu".into(),
            rto_objective_ms: 60_000,
            rpo_objective_ms: 3_600_000,
            steps: vec![
                step("restore db", "done", 0, 50_000),
                step("check db", "done", 50_000, 70_000),
                step("teardown", "done", 70_000, 71_000),
            ],
            state: "finished".into(),
            verdict: "missed".into(),
            reasons: vec!["RTO 1m 11s is over the objective of 1m".into()],
            rto_ms: Some(71_000),
            rpo_ms: Some(120_000),
            started_unix_ms: 1_000_000,
            finished_unix_ms: 1_071_000,
            requested_by: "operator <ops>".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_page_has_the_verdict_each_objective_and_each_phase_and_fetches_nothing() {
        let page = html(&drill());
        assert!(page.contains("<span id=\"verdict\" class=\"verdict missed\">MISSED</span>"));
        assert!(page.contains(
            "<tr class=\"objective missed\" data-objective=\"RTO\"><td>RTO</td><td>1m</td><td>1m 11s</td><td class=\"miss\">missed</td></tr>"
        ));
        assert!(page.contains(
            "data-objective=\"RPO\"><td>RPO</td><td>1h</td><td>2m</td><td class=\"ok\">met</td>"
        ));
        for step in ["restore db", "check db", "teardown"] {
            assert!(page.contains(&format!("data-step=\"{step}\"")), "{step}");
        }
        // Text from the journal is escaped, not markup.
        assert!(page.contains("restore db &lt;done&gt;"));
        assert!(page.contains("operator &lt;ops&gt;"));
        // Nothing is fetched: no links, scripts or sources; the only URL
        // is the SVG namespace, which is a name, not a request.
        let without_ns = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for bad in [
            "http://", "https://", "src=", "href=", "<script", "<link", "@import", "url(",
        ] {
            assert!(!without_ns.contains(bad), "{bad} in the page");
        }
    }

    #[test]
    fn a_running_drill_and_an_unmeasured_figure_still_render() {
        let mut d = drill();
        d.verdict.clear();
        d.rpo_ms = None;
        d.steps[2].ended_unix_ms = 0;
        d.steps[2].state = "running".into();
        let page = html(&d);
        assert!(page.contains("class=\"verdict running\">RUNNING<"));
        assert!(page.contains("data-objective=\"RPO\"><td>RPO</td><td>1h</td><td>-</td><td class=\"miss\">not measured</td>"));
        assert!(page.contains("data-step=\"teardown\" data-state=\"running\""));
    }
}
