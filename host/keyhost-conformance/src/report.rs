//! How a run ended, and the forms it is published in: text, JUnit, JSON and
//! HTML.

use std::fmt::Write as _;

use serde::Serialize;

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "lowercase")]
pub enum Outcome {
    /// The rule holds.
    Pass,
    /// The rule is broken; the text says how.
    Fail(String),
    /// The case does not apply; the text says why.
    Skip(String),
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Stable identifier.
    pub id: &'static str,
    /// What it checks.
    pub title: &'static str,
    /// The contract's words it checks.
    pub rule: &'static str,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long it took, in seconds.
    pub seconds: f64,
}

/// The result of a kit run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plugin's source (file or builtin label).
    pub plugin: String,
    /// The plugin's name, as its `info` reports it.
    pub plugin_name: String,
    /// The plugin's version, as its `info` reports it.
    pub plugin_version: String,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    /// The version of the kit (keyhost's).
    pub kit_version: String,
    /// The seed of the randomized cases: `--seed` replays them.
    pub seed: u64,
    /// The prefix under which the kit created its records.
    pub prefix: String,
    /// Every case that ran (after filtering).
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Pass))
    }
    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }
    /// Cases that were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }
    /// The ids of the failed cases.
    pub fn failed_ids(&self) -> Vec<&'static str> {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
            .map(|c| c.id)
            .collect()
    }

    /// A human-readable summary: one line per case, then the totals.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "conformance of {} ({} {}), sha256 {}\nkit {}, seed {} (reproduce with --seed {})\n",
            self.plugin, self.plugin_name, self.plugin_version, self.sha256, self.kit_version, self.seed, self.seed
        );
        for case in &self.cases {
            let (mark, detail) = match &case.outcome {
                Outcome::Pass => ("ok  ", String::new()),
                Outcome::Fail(why) => (
                    "FAIL",
                    format!("\n       rule: \u{201c}{}\u{201d}\n       {why}", case.rule),
                ),
                Outcome::Skip(why) => ("skip", format!(" ({why})")),
            };
            let _ = writeln!(
                out,
                "  {mark} {:<28} {:>7.3}s  {}{detail}",
                case.id, case.seconds, case.title
            );
        }
        let _ = writeln!(
            out,
            "{} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        );
        out
    }

    /// The report as JUnit XML.
    pub fn to_junit(&self) -> String {
        let total: f64 = self.cases.iter().map(|c| c.seconds).sum();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuite name=\"keyhost-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total:.3}\">",
            self.cases.len(),
            self.failed(),
            self.skipped()
        );
        out.push_str("  <properties>");
        for (name, value) in self.properties() {
            let _ = write!(out, "<property name=\"{name}\" value=\"{}\"/>", xml(&value));
        }
        out.push_str("</properties>\n");
        for case in &self.cases {
            let _ = write!(
                out,
                "  <testcase classname=\"keyhost.conformance\" name=\"{}\" time=\"{:.3}\"",
                case.id, case.seconds
            );
            match &case.outcome {
                Outcome::Pass => out.push_str("/>\n"),
                Outcome::Fail(why) => {
                    let _ = writeln!(
                        out,
                        "><failure message=\"{}\">rule: {}\n{}</failure></testcase>",
                        xml(case.title),
                        xml(case.rule),
                        xml(why)
                    );
                }
                Outcome::Skip(why) => {
                    let _ = writeln!(out, "><skipped message=\"{}\"/></testcase>", xml(why));
                }
            }
        }
        out.push_str("</testsuite>\n");
        out
    }

    /// What identifies the run, as (name, value) pairs: the plugin, its name,
    /// version and SHA-256, the kit's version and the seed.
    pub fn properties(&self) -> [(&'static str, String); 6] {
        [
            ("plugin", self.plugin.clone()),
            ("plugin.name", self.plugin_name.clone()),
            ("plugin.version", self.plugin_version.clone()),
            ("sha256", self.sha256.clone()),
            ("kit.version", self.kit_version.clone()),
            ("seed", self.seed.to_string()),
        ]
    }

    /// The report as one self-contained HTML page (no script, no external
    /// resource), to publish beside a plugin: what was tested, the totals, every
    /// case with the contract's words it checks, and the rules the kit cannot check.
    pub fn to_html(&self) -> String {
        let total: f64 = self.cases.iter().map(|c| c.seconds).sum();
        let verdict = if self.failed() == 0 { "pass" } else { "fail" };
        let mut out = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        let _ = writeln!(
            out,
            "<title>keyhost conformance: {} {}</title>",
            html(&self.plugin_name),
            html(&self.plugin_version)
        );
        out.push_str(
            "<style>body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}\
             table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}\
             code,.mono{font-family:ui-monospace,monospace;font-size:90%}.pass{color:#176b2c}.fail{color:#b00020;font-weight:bold}.skip{color:#8a6d00}\
             .banner{padding:.6em 1em;border-radius:4px;margin:1em 0}.banner.pass{background:#e6f4ea}.banner.fail{background:#fce8e6}\
             details pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}dt{font-weight:bold}dd{margin:0 0 .4em 0}</style>\n</head><body>\n",
        );
        let _ = writeln!(
            out,
            "<h1>keyhost plugin conformance: {} {}</h1>",
            html(&self.plugin_name),
            html(&self.plugin_version)
        );
        let _ = writeln!(
            out,
            "<div class=\"banner {verdict}\">{} passed, {} failed, {} skipped in {total:.1} s</div>",
            self.passed(),
            self.failed(),
            self.skipped()
        );
        out.push_str("<dl>\n");
        for (name, value) in self.properties() {
            let _ = writeln!(out, "<dt>{name}</dt><dd class=\"mono\">{}</dd>", html(&value));
        }
        out.push_str(
            "</dl>\n<h2>Cases</h2>\n<table><tr><th>case</th><th>checks</th><th>outcome</th><th>seconds</th></tr>\n",
        );
        for case in &self.cases {
            let (class, word, detail) = match &case.outcome {
                Outcome::Pass => ("pass", "pass", None),
                Outcome::Fail(why) => ("fail", "FAIL", Some(why)),
                Outcome::Skip(why) => ("skip", "skip", Some(why)),
            };
            let _ = write!(
                out,
                "<tr><td class=\"mono\">{}</td><td>{}",
                html(case.id),
                html(case.title)
            );
            if let Some(why) = detail {
                let _ = write!(
                    out,
                    "<details><summary>rule and detail</summary><p>rule: \u{201c}{}\u{201d}</p><pre>{}</pre></details>",
                    html(case.rule),
                    html(why)
                );
            }
            let _ = writeln!(
                out,
                "</td><td class=\"{class}\">{word}</td><td>{:.3}</td></tr>",
                case.seconds
            );
        }
        out.push_str("</table>\n<h2>What the kit cannot check</h2>\n<ul>\n");
        for (sentence, why) in crate::contract::unchecked() {
            let _ = writeln!(
                out,
                "<li>\u{201c}{}\u{2026}\u{201d}: {}</li>",
                html(sentence),
                html(why)
            );
        }
        out.push_str("</ul>\n</body></html>\n");
        out
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// `s` as HTML text: markup characters escaped, control characters replaced.
fn html(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c if c.is_control() && c != '\n' && c != '\t' => "\u{fffd}".into(),
            c => c.to_string(),
        })
        .collect()
}

fn xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            c if c.is_control() && c != '\n' && c != '\t' => "\u{fffd}".into(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(detail: &str) -> Report {
        Report {
            plugin: "my<store>.wasm".into(),
            plugin_name: "my-store".into(),
            plugin_version: "1.2.3".into(),
            sha256: "ab".repeat(32),
            kit_version: "0.1.0".into(),
            seed: 42,
            prefix: "kcx-".into(),
            cases: vec![
                CaseResult {
                    id: "get.missing",
                    title: "get of a missing name is not-found",
                    rule: "`not-found` if there is none.",
                    outcome: Outcome::Fail(detail.into()),
                    seconds: 0.5,
                },
                CaseResult {
                    id: "list.sorted",
                    title: "sorted",
                    rule: "Names come in ascending byte order.",
                    outcome: Outcome::Pass,
                    seconds: 0.25,
                },
            ],
        }
    }

    #[test]
    fn the_html_report_escapes_what_a_plugin_said_and_names_the_plugin() {
        let page = report("got <script>alert(1)</script> & \"more\"\u{0}").to_html();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("got &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;more&quot;\u{fffd}"));
        assert!(page.contains("my&lt;store&gt;.wasm"));
        for needle in [
            "my-store",
            "1.2.3",
            &"ab".repeat(32),
            ">42<",
            "1 passed, 1 failed, 0 skipped",
        ] {
            assert!(page.contains(needle), "{needle} missing from {page}");
        }
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "self-contained"
        );
        assert!(page.contains("What the kit cannot check"));
    }

    #[test]
    fn every_form_names_the_plugin_its_version_sha256_and_the_seed() {
        let r = report("no");
        let sha = "ab".repeat(32);
        for text in [r.to_text(), r.to_junit(), r.to_json(), r.to_html()] {
            for needle in ["my-store", "1.2.3", sha.as_str(), "42"] {
                assert!(text.contains(needle), "{needle} missing from {text}");
            }
        }
    }
}
