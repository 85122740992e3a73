//! The text form of a summary: aligned columns, the group left-aligned, numbers right-aligned, and a
//! total line when there is more than one group. The JSON form is [`super::UsageReport`] via serde.

use super::{By, SummaryRow};

const HEADERS: [&str; 11] = [
    "", // Replaced by the grouping's name.
    "requests",
    "errors",
    "prompt",
    "completion",
    "cached",
    "reasoning",
    "tool calls",
    "avg ms",
    "p50 ms",
    "p50 first ms",
];

/// Renders `rows` as a table whose first column is headed by `by` (`day`, `profile`, ...). Ends with
/// a newline; an empty summary says so under the header.
pub fn render_table(by: By, rows: &[SummaryRow]) -> String {
    let mut lines: Vec<[String; 11]> = Vec::with_capacity(rows.len() + 2);
    let mut header = HEADERS.map(String::from);
    header[0] = by.as_str().to_string();
    lines.push(header);
    lines.extend(rows.iter().map(cells));
    if rows.len() > 1 {
        lines.push(total(rows));
    }
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|column| {
            lines
                .iter()
                .map(|line| line[column].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = format!("{:<width$}", line[0], width = widths[0]);
        for (cell, width) in line.iter().zip(&widths).skip(1) {
            text.push_str(&format!("  {cell:>width$}"));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no requests in this window)\n");
    }
    out
}

fn cells(row: &SummaryRow) -> [String; 11] {
    [
        row.group.clone(),
        row.requests.to_string(),
        row.errors.to_string(),
        row.prompt_tokens.to_string(),
        row.completion_tokens.to_string(),
        row.cached_tokens.to_string(),
        row.reasoning_tokens.to_string(),
        row.tool_calls.to_string(),
        row.latency_avg_ms.to_string(),
        row.latency_p50_ms.to_string(),
        row.first_token_p50_ms
            .map_or_else(|| "-".to_string(), |ms| ms.to_string()),
    ]
}

/// Sums of every count column, and the request-weighted average latency. Medians cannot be combined
/// from medians, so those cells are `-`.
fn total(rows: &[SummaryRow]) -> [String; 11] {
    let sum = |field: fn(&SummaryRow) -> u64| rows.iter().map(field).sum::<u64>();
    let requests = sum(|row| row.requests);
    let latency_weighted = sum(|row| row.latency_avg_ms * row.requests);
    [
        "total".to_string(),
        requests.to_string(),
        sum(|row| row.errors).to_string(),
        sum(|row| row.prompt_tokens).to_string(),
        sum(|row| row.completion_tokens).to_string(),
        sum(|row| row.cached_tokens).to_string(),
        sum(|row| row.reasoning_tokens).to_string(),
        sum(|row| row.tool_calls).to_string(),
        (latency_weighted / requests.max(1)).to_string(),
        "-".to_string(),
        "-".to_string(),
    ]
}
