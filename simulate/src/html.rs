//! The report as one self-contained HTML file: inline CSS and inline SVG charts, no
//! scripts, fonts or other external resources, so it opens offline and can be mailed.
//! The markup is also well-formed XML (every element closed, attributes quoted).

use std::fmt::Write as _;

use super::report::{ModelStats, Percentiles, RegionReport, Report, VariantReport};

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const WIDTH: f64 = 780.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

pub fn render(report: &Report) -> String {
    let mut html = String::new();
    let s = &report.scenario;
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<title>edgebox simulate: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.25em; margin-top: 2em; }} h3 {{ font-size: 1.05em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
.warn {{ background: #fff3cd; border: 1px solid #e0c36b; padding: 0.6em 1em; }}
.muted {{ color: #666; font-size: 0.9em; }}
svg {{ background: #fff; border: 1px solid #ddd; margin: 0.5em 0; }}
svg text {{ font-family: system-ui, sans-serif; font-size: 11px; fill: #333; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
</style>
</head>
<body>
<h1>edgebox simulate: {name}</h1>
"#,
        name = escape(&s.name)
    );
    if !s.description.is_empty() {
        let _ = writeln!(html, "<p>{}</p>", escape(&s.description));
    }
    if report.interrupted {
        html.push_str("<p class=\"warn\">The run was interrupted: this report is partial.</p>\n");
    }
    if let Some(error) = &report.error {
        let _ = writeln!(
            html,
            "<p class=\"warn\">The run stopped early: {}</p>",
            escape(error)
        );
    }
    let clients: Vec<String> = s
        .clients
        .iter()
        .map(|c| format!("{} {}/s", c.region, c.rate))
        .collect();
    let _ = writeln!(
        html,
        "<p class=\"muted\">Scenario <code>{}</code>, seed {}, workload <code>{}</code> ({} planned requests), clients: {}. Target: {}. Started {}, finished {}.</p>",
        escape(&s.source),
        s.seed,
        escape(&s.workload_digest),
        s.planned_requests,
        escape(&clients.join(", ")),
        escape(&s.target),
        escape(&report.started_at),
        escape(&report.finished_at),
    );

    if !report.agreement.is_empty() {
        html.push_str("<h2>Live against model</h2>\n<p class=\"muted\">The same requests replayed against real edges and through model mode: the share of answered requests each tier served.</p>\n");
        for agreement in &report.agreement {
            let _ = writeln!(
                html,
                "<h3>{}: largest difference {:.2} percentage points</h3>\n<table><tr><th>tier</th><th>live</th><th>model</th><th>difference (pp)</th></tr>",
                escape(&agreement.variant),
                agreement.max_difference_pp
            );
            for row in &agreement.rows {
                let _ = writeln!(
                    html,
                    "<tr><td>{}</td><td>{:.2}%</td><td>{:.2}%</td><td>{:.2}</td></tr>",
                    escape(&row.tier),
                    row.live * 100.0,
                    row.model * 100.0,
                    row.difference_pp
                );
            }
            html.push_str("</table>\n");
        }
    }
    if !report.variants.is_empty() {
        html.push_str("<h2>Variants compared</h2>\n");
        comparison_table(&mut html, &report.variants);
        let names: Vec<String> = report.variants.iter().map(|v| v.name.clone()).collect();
        let hit: Vec<f64> = report
            .variants
            .iter()
            .map(|v| v.total.hit_ratio * 100.0)
            .collect();
        let offload_bytes: Vec<f64> = report
            .variants
            .iter()
            .map(|v| v.total.origin_offload.bytes * 100.0)
            .collect();
        let tier_share = |tier: &str| -> Vec<f64> {
            report
                .variants
                .iter()
                .map(|v| v.total.tiers.get(tier).map_or(0.0, |t| t.ratio * 100.0))
                .collect()
        };
        html.push_str(&bar_chart(
            "Who answered: share of successful requests by tier, all regions",
            "variant",
            "%",
            &names,
            &[
                ("l1", tier_share("l1")),
                ("l2", tier_share("l2")),
                ("parent", tier_share("parent")),
                ("origin", tier_share("origin")),
                ("unknown", tier_share("unknown")),
            ],
            Some(100.0),
        ));
        html.push_str(&bar_chart(
            "Cache hit ratio and origin offload (bytes), all regions",
            "variant",
            "%",
            &names,
            &[("hit ratio", hit), ("offload (bytes)", offload_bytes)],
            Some(100.0),
        ));
        let p = |pick: fn(&Percentiles) -> f64| -> Vec<f64> {
            report
                .variants
                .iter()
                .map(|v| v.total.latency_ms.as_ref().map_or(0.0, pick))
                .collect()
        };
        html.push_str(&bar_chart(
            "Latency, all regions",
            "variant",
            "ms",
            &names,
            &[
                ("p50", p(|p| p.p50)),
                ("p90", p(|p| p.p90)),
                ("p99", p(|p| p.p99)),
            ],
            None,
        ));
        if report.variants.len() > 1 {
            let regions: Vec<String> = report.variants[0]
                .regions
                .iter()
                .map(|r| r.region.clone())
                .collect();
            let per_region = |pick: &dyn Fn(&RegionReport) -> f64| -> Vec<(&str, Vec<f64>)> {
                report
                    .variants
                    .iter()
                    .map(|v| (v.name.as_str(), v.regions.iter().map(pick).collect()))
                    .collect()
            };
            html.push_str(&bar_chart(
                "Origin offload (requests) per region, by variant",
                "client region",
                "%",
                &regions,
                &per_region(&|r| r.origin_offload.requests * 100.0),
                Some(100.0),
            ));
            html.push_str(&bar_chart(
                "p99 latency per region, by variant",
                "client region",
                "ms",
                &regions,
                &per_region(&|r| r.latency_ms.as_ref().map_or(0.0, |p| p.p99)),
                None,
            ));
        }

        html.push_str("<h2>Hit ratio over time</h2>\n");
        let series: Vec<(String, Vec<(f64, f64)>)> = report
            .variants
            .iter()
            .map(|variant| {
                let points = variant
                    .timeline
                    .points
                    .iter()
                    .filter(|point| point.requests > 0)
                    .map(|point| {
                        (
                            point.t_s + variant.timeline.bucket_s / 2.0,
                            point.offloaded as f64 / point.requests as f64 * 100.0,
                        )
                    })
                    .collect();
                (variant.name.clone(), points)
            })
            .collect();
        html.push_str(&line_chart(
            "Requests answered without reaching an origin (l1 + l2 + parent)",
            "seconds into the run",
            "%",
            &series,
            Some((0.0, 100.0)),
        ));
    }

    model_sections(&mut html, &report.variants);

    for variant in &report.variants {
        let _ = writeln!(html, "<h2>Variant {}</h2>", escape(&variant.name));
        if !variant.description.is_empty() {
            let _ = writeln!(html, "<p>{}</p>", escape(&variant.description));
        }
        let settings = serde_json::to_string(&variant.settings).unwrap_or_default();
        let _ = writeln!(
            html,
            "<p class=\"muted\">Settings: <code>{}</code>; ran {:.1}s{}.</p>",
            escape(&settings),
            variant.elapsed_s,
            if variant.interrupted {
                format!(
                    ", interrupted ({} planned requests not sent)",
                    variant.unsent
                )
            } else {
                String::new()
            }
        );
        region_table(&mut html, variant);
        let series: Vec<(String, Vec<(f64, f64)>)> = variant
            .regions
            .iter()
            .map(|region| {
                (
                    region.region.clone(),
                    region
                        .latency_cdf
                        .iter()
                        .map(|[x, y]| (*x, *y * 100.0))
                        .collect(),
                )
            })
            .collect();
        html.push_str(&line_chart(
            &format!("Latency CDF per region — {}", variant.name),
            "latency (ms, client-measured)",
            "% of requests",
            &series,
            Some((0.0, 100.0)),
        ));
        if !variant.routes.is_empty() {
            let routes: Vec<String> = variant
                .routes
                .iter()
                .map(|r| {
                    let counted = r
                        .edge_reported
                        .map_or_else(|| "not reported".to_owned(), |n| n.to_string());
                    format!(
                        "{} → {} ({}): sent {}, counted by the edge {counted}",
                        r.region, r.edge, r.url, r.requests
                    )
                })
                .collect();
            let _ = writeln!(
                html,
                "<p class=\"muted\">Routes: {}</p>",
                escape(&routes.join("; "))
            );
        }
        if !variant.edges.is_empty() {
            let edges: Vec<String> = variant
                .edges
                .iter()
                .map(|edge| match (edge.requests, &edge.error) {
                    (Some(n), _) => format!("{}: {n}", edge.edge),
                    (None, Some(error)) => format!("{}: unavailable ({error})", edge.edge),
                    (None, None) => format!("{}: unavailable", edge.edge),
                })
                .collect();
            let _ = writeln!(
                html,
                "<p class=\"muted\">Requests counted by the edges themselves: {}</p>",
                escape(&edges.join("; "))
            );
        }
    }
    html.push_str(
        "<p class=\"muted\">Tiers come from each response's <code>X-Cache-Tier</code> header (\"unknown\" when absent); the simulated part of latency from <code>Server-Timing</code>. Generated by <code>edgebox simulate</code>.</p>\n</body>\n</html>\n",
    );
    html
}

/// Model mode: miss-ratio curves (hit ratio against L1 size, one line per policy), the
/// replay's speed, origin load and the cost table.
fn model_sections(html: &mut String, variants: &[VariantReport]) {
    let modelled: Vec<(&VariantReport, &ModelStats)> = variants
        .iter()
        .filter_map(|variant| variant.model.as_ref().map(|model| (variant, model)))
        .collect();
    if modelled.is_empty() {
        return;
    }
    let mut policies: Vec<&str> = modelled.iter().map(|(_, m)| m.l1_policy.as_str()).collect();
    policies.sort_unstable();
    policies.dedup();
    let mut sizes: Vec<u64> = modelled.iter().map(|(_, m)| m.l1_capacity).collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.len() > 1 {
        html.push_str("<h2>Hit ratio against L1 size</h2>\n");
        let _ = writeln!(
            html,
            "<p class=\"muted\">L1 per edge on a log scale (x = log2 of MiB): {}.</p>",
            sizes
                .iter()
                .map(|size| escape(&edgebox_config::units::ByteSize(*size).to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let curve = |pick: &dyn Fn(&VariantReport) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
            policies
                .iter()
                .map(|policy| {
                    let mut points: Vec<(f64, f64)> = modelled
                        .iter()
                        .filter(|(_, m)| m.l1_policy == *policy && m.l1_capacity > 0)
                        .map(|(v, m)| {
                            let mib = m.l1_capacity as f64 / (1u64 << 20) as f64;
                            (mib.log2(), pick(v) * 100.0)
                        })
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    ((*policy).to_owned(), points)
                })
                .collect()
        };
        html.push_str(&line_chart(
            "Requests answered without reaching an origin, by L1 size and policy",
            "log2(L1 MiB per edge)",
            "%",
            &curve(&|v| v.total.hit_ratio),
            Some((0.0, 100.0)),
        ));
        html.push_str(&line_chart(
            "Bytes answered without reaching an origin, by L1 size and policy",
            "log2(L1 MiB per edge)",
            "%",
            &curve(&|v| v.total.origin_offload.bytes),
            Some((0.0, 100.0)),
        ));
    }
    html.push_str("<h2>Model runs</h2>\n<table>\n<tr><th>variant</th><th>L1 policy</th><th>L1 per edge</th><th>hit ratio</th><th>byte hit ratio</th><th>L1 evictions</th><th>simulated</th><th>wall</th><th>requests/s</th><th>requests per CPU-second</th></tr>\n");
    for (variant, model) in &modelled {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0} s</td><td>{:.2} s</td><td>{:.0}</td><td>{:.0}</td></tr>",
            escape(&variant.name),
            escape(&model.l1_policy),
            escape(&edgebox_config::units::ByteSize(model.l1_capacity).to_string()),
            pct(variant.total.hit_ratio),
            pct(variant.total.origin_offload.bytes),
            model.l1_evictions,
            model.simulated_s,
            model.wall_s,
            model.requests_per_s,
            model.requests_per_cpu_s,
        );
    }
    html.push_str("</table>\n");
    html.push_str("<h2>Origin load</h2>\n<table>\n<tr><th>variant</th><th>origin</th><th>requests</th><th>GiB</th><th>peak requests/s</th><th>peak MiB/s</th></tr>\n");
    for (variant, model) in &modelled {
        for origin in &model.origins {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{:.2}</td></tr>",
                escape(&variant.name),
                escape(&origin.name),
                origin.requests,
                origin.bytes as f64 / (1u64 << 30) as f64,
                origin.peak_requests_per_s,
                origin.peak_bytes_per_s as f64 / (1u64 << 20) as f64,
            );
        }
    }
    html.push_str("</table>\n");
    if modelled.iter().any(|(_, m)| m.cost.is_some()) {
        html.push_str("<h2>Cost</h2>\n<table>\n<tr><th>variant</th><th>client egress</th><th>origin requests</th><th>origin egress</th><th>storage</th><th>total</th></tr>\n");
        for (variant, model) in &modelled {
            if let Some(cost) = &model.cost {
                let _ = writeln!(
                    html,
                    "<tr><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2} {}</td></tr>",
                    escape(&variant.name),
                    cost.client_egress,
                    cost.origin_requests,
                    cost.origin_egress,
                    cost.storage,
                    cost.total,
                    escape(&cost.currency),
                );
            }
        }
        html.push_str("</table>\n");
    }
}

fn comparison_table(html: &mut String, variants: &[VariantReport]) {
    html.push_str("<table>\n<tr><th>variant</th><th>requests</th><th>hit ratio</th><th>offload (requests)</th><th>offload (bytes)</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>simulated p99 ms</th><th>errors</th><th>dropped</th></tr>\n");
    for variant in variants {
        let t = &variant.total;
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&variant.name),
            t.requests,
            pct(t.hit_ratio),
            pct(t.origin_offload.requests),
            pct(t.origin_offload.bytes),
            ms(t.latency_ms.as_ref(), |p| p.p50),
            ms(t.latency_ms.as_ref(), |p| p.p90),
            ms(t.latency_ms.as_ref(), |p| p.p99),
            ms(t.simulated_ms.as_ref(), |p| p.p99),
            t.errors,
            t.dropped
        );
    }
    html.push_str("</table>\n");
}

fn region_table(html: &mut String, variant: &VariantReport) {
    html.push_str("<table>\n<tr><th>region</th><th>requests</th><th>rate/s</th><th>l1</th><th>l2</th><th>parent</th><th>origin</th><th>unknown</th><th>offload req / bytes</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>sim p50 / p90 / p99 ms</th><th>errors</th><th>dropped</th><th>late</th></tr>\n");
    for region in variant
        .regions
        .iter()
        .chain(std::iter::once(&variant.total))
    {
        row(html, region);
    }
    html.push_str("</table>\n");
}

fn row(html: &mut String, r: &RegionReport) {
    let tier = |name: &str| pct(r.tiers.get(name).map_or(0.0, |t| t.ratio));
    let errors = if r.errors_by_kind.is_empty() {
        r.errors.to_string()
    } else {
        let kinds: Vec<String> = r
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!("{} ({})", r.errors, kinds.join(", "))
    };
    let _ = writeln!(
        html,
        "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {} / {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&r.region),
        r.requests,
        r.achieved_rate,
        tier("l1"),
        tier("l2"),
        tier("parent"),
        tier("origin"),
        tier("unknown"),
        pct(r.origin_offload.requests),
        pct(r.origin_offload.bytes),
        ms(r.latency_ms.as_ref(), |p| p.p50),
        ms(r.latency_ms.as_ref(), |p| p.p90),
        ms(r.latency_ms.as_ref(), |p| p.p99),
        ms(r.simulated_ms.as_ref(), |p| p.p50),
        ms(r.simulated_ms.as_ref(), |p| p.p90),
        ms(r.simulated_ms.as_ref(), |p| p.p99),
        escape(&errors),
        r.dropped,
        r.late
    );
}

fn pct(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

fn ms(value: Option<&Percentiles>, pick: fn(&Percentiles) -> f64) -> String {
    value.map_or_else(|| "-".to_owned(), |p| format!("{:.1}", pick(p)))
}

/// Round tick values covering `0..=max`.
fn ticks(min: f64, max: f64) -> Vec<f64> {
    let span = (max - min).max(1e-9);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude);
    let mut ticks = Vec::new();
    let mut value = (min / step).ceil() * step;
    while value <= max + step * 1e-6 {
        ticks.push(value);
        value += step;
    }
    ticks
}

fn label(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.1}");
        text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
    }
}

fn frame(title: &str, x_label: &str, y_label: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}">
<text x="{tx}" y="18" text-anchor="middle" font-weight="bold">{t}</text>
<text x="{xx}" y="{xy}" text-anchor="middle">{xl}</text>
<text x="14" y="{yy}" text-anchor="middle" transform="rotate(-90 14 {yy})">{yl}</text>
"#,
        t = escape(title),
        tx = (LEFT + WIDTH - RIGHT) / 2.0,
        xx = (LEFT + WIDTH - RIGHT) / 2.0,
        xy = HEIGHT - 8.0,
        xl = escape(x_label),
        yy = (TOP + HEIGHT - BOTTOM) / 2.0,
        yl = escape(y_label),
    )
}

fn legend(svg: &mut String, names: &[String]) {
    for (index, name) in names.iter().enumerate() {
        let y = TOP + 10.0 + index as f64 * 18.0;
        let x = WIDTH - RIGHT + 15.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}" /><text x="{}" y="{}">{}</text>"#,
            y - 10.0,
            COLORS[index % COLORS.len()],
            x + 18.0,
            y,
            escape(name)
        );
    }
}

/// A line chart with one line per series; `y_range` fixes the y axis.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    y_range: Option<(f64, f64)>,
) -> String {
    let mut svg = frame(title, x_label, y_label);
    let points = series.iter().flat_map(|(_, points)| points.iter());
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (x, y) in points {
        x_min = x_min.min(*x);
        x_max = x_max.max(*x);
        y_min = y_min.min(*y);
        y_max = y_max.max(*y);
    }
    if !x_min.is_finite() {
        svg.push_str(&format!(
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        ));
        svg.push_str("</svg>\n");
        return svg;
    }
    x_min = x_min.min(0.0);
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let (y_min, y_max) = y_range.unwrap_or((y_min.min(0.0), if y_max > 0.0 { y_max } else { 1.0 }));
    axes(&mut svg, x_min, x_max, y_min, y_max);
    let sx = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * (WIDTH - LEFT - RIGHT);
    let sy = |y: f64| HEIGHT - BOTTOM - (y - y_min) / (y_max - y_min) * (HEIGHT - TOP - BOTTOM);
    for (index, (_, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}" />"#,
            COLORS[index % COLORS.len()],
            path.join(" ")
        );
    }
    let names: Vec<String> = series.iter().map(|(name, _)| name.clone()).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>\n");
    svg
}

fn axes(svg: &mut String, x_min: f64, x_max: f64, y_min: f64, y_max: f64) {
    let sx = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * (WIDTH - LEFT - RIGHT);
    let sy = |y: f64| HEIGHT - BOTTOM - (y - y_min) / (y_max - y_min) * (HEIGHT - TOP - BOTTOM);
    for y in ticks(y_min, y_max) {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y1:.1}" y2="{y1:.1}" stroke="#eee" /><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 5.0,
            sy(y) + 4.0,
            label(y),
            y1 = sy(y),
        );
    }
    for x in ticks(x_min, x_max) {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            sx(x),
            HEIGHT - BOTTOM + 15.0,
            label(x)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{b}" stroke="#333" /><line x1="{LEFT}" x2="{r}" y1="{b}" y2="{b}" stroke="#333" />"##,
        b = HEIGHT - BOTTOM,
        r = WIDTH - RIGHT,
    );
}

/// Grouped bars: one group per category, one bar per metric.
pub fn bar_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    categories: &[String],
    metrics: &[(&str, Vec<f64>)],
    y_max: Option<f64>,
) -> String {
    let mut svg = frame(title, x_label, y_label);
    let highest = metrics
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .fold(0.0f64, f64::max);
    let y_max = y_max.unwrap_or(if highest > 0.0 { highest * 1.1 } else { 1.0 });
    let sy = |y: f64| HEIGHT - BOTTOM - y / y_max * (HEIGHT - TOP - BOTTOM);
    for y in ticks(0.0, y_max) {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y1:.1}" y2="{y1:.1}" stroke="#eee" /><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 5.0,
            sy(y) + 4.0,
            label(y),
            y1 = sy(y),
        );
    }
    let plot = WIDTH - LEFT - RIGHT;
    let group = plot / categories.len().max(1) as f64;
    let bar = (group * 0.8) / metrics.len().max(1) as f64;
    for (c, category) in categories.iter().enumerate() {
        let x0 = LEFT + c as f64 * group + group * 0.1;
        for (m, (name, values)) in metrics.iter().enumerate() {
            let value = values.get(c).copied().unwrap_or(0.0);
            let x = x0 + m as f64 * bar;
            let top = sy(value.min(y_max));
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} {:.1}</title></rect>"#,
                (bar - 2.0).max(1.0),
                (HEIGHT - BOTTOM - top).max(0.0),
                COLORS[m % COLORS.len()],
                escape(category),
                escape(name),
                value
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + bar / 2.0,
                top - 3.0,
                label(value)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + group * 0.4,
            HEIGHT - BOTTOM + 15.0,
            escape(category)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{b}" stroke="#333" /><line x1="{LEFT}" x2="{r}" y1="{b}" y2="{b}" stroke="#333" />"##,
        b = HEIGHT - BOTTOM,
        r = WIDTH - RIGHT,
    );
    let names: Vec<String> = metrics.iter().map(|(name, _)| (*name).to_owned()).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>\n");
    svg
}
