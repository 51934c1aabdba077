//! Every relative link in the documentation points at something that exists: README.md,
//! ARCHITECTURE.md, BENCHMARKS.md, `docs/**/*.md` and `workers/**/*.md`. A link to a markdown
//! file with a `#fragment` must also name one of that file's headings (GitHub's anchors).
//! Links with a scheme (`https:`, `mailto:`) are not followed. Cheap: no network, no build.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            markdown_under(&path, out);
        } else if path.extension().is_some_and(|x| x == "md") {
            out.push(path);
        }
    }
}

/// The documentation files the test covers.
fn pages() -> Vec<PathBuf> {
    let root = repo();
    let mut pages: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "BENCHMARKS.md"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    markdown_under(&root.join("docs"), &mut pages);
    markdown_under(&root.join("workers"), &mut pages);
    pages.sort();
    pages
}

/// The text of a page outside fenced code blocks and inline code spans, line by line.
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut prose = String::new();
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                prose.push(c);
            }
        }
        out.push((n + 1, prose));
    }
    out
}

/// Link targets on one line: inline `[text](target)` and reference definitions `[x]: target`.
fn targets(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        found.push(target.trim_matches(|c| c == '<' || c == '>').to_owned());
        rest = &after[end..];
    }
    let t = line.trim_start();
    if t.starts_with('[')
        && let Some(i) = t.find("]: ")
    {
        found.push(t[i + 3..].trim().to_owned());
    }
    found
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` removed,
/// spaces as hyphens; repeated headings get `-1`, `-2`, ….
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if fenced {
            continue;
        }
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 0;
        while seen.contains(&candidate) {
            n += 1;
            candidate = format!("{slug}-{n}");
        }
        seen.insert(candidate);
    }
    seen
}

#[test]
fn every_relative_link_in_the_documentation_resolves() {
    let root = repo().canonicalize().unwrap();
    let pages = pages();
    assert!(
        pages.len() > 10,
        "the documentation pages were found: {pages:?}"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let dir = page.parent().unwrap();
        let shown = page
            .strip_prefix(repo())
            .unwrap_or(page)
            .display()
            .to_string();
        for (n, line) in prose_lines(&text) {
            for target in targets(&line) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, fragment) = match target.split_once('#') {
                    Some((p, f)) => (p, Some(f)),
                    None => (target.as_str(), None),
                };
                let file = if path.is_empty() {
                    page.clone()
                } else {
                    dir.join(path)
                };
                let Ok(resolved) = file.canonicalize() else {
                    broken.push(format!("{shown}:{n}: {target}: no such file"));
                    continue;
                };
                if !resolved.starts_with(&root) {
                    broken.push(format!("{shown}:{n}: {target}: outside the repository"));
                    continue;
                }
                if let Some(fragment) = fragment
                    && resolved.extension().is_some_and(|x| x == "md")
                {
                    let target_text = std::fs::read_to_string(&resolved).unwrap();
                    if !anchors(&target_text).contains(fragment) {
                        broken.push(format!("{shown}:{n}: {target}: no heading #{fragment}"));
                    }
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found");
    assert!(
        broken.is_empty(),
        "broken relative links in the documentation:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_anchor_rules_match_github() {
    let a = anchors(
        "# Evidence receipts\n## Configuration: `[receipts]`\n```\n# not a heading\n```\n\
         ## Truncation: what is detected locally and what is not\n## Notes\n## Notes\n",
    );
    for want in [
        "evidence-receipts",
        "configuration-receipts",
        "truncation-what-is-detected-locally-and-what-is-not",
        "notes",
        "notes-1",
    ] {
        assert!(a.contains(want), "{want} in {a:?}");
    }
    assert!(!a.contains("not-a-heading"));
}
