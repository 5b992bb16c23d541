//! The documentation: every link between the README and the pages under
//! `docs/` leads to a file that exists and, with a `#fragment`, to a heading
//! of that file (by GitHub's rules for heading anchors); every page under
//! `docs/` is linked; and the README's test command is what `.ci/run` runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every Markdown page under docs/, as paths from the root.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let docs = root().join("docs");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&docs)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", docs.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| p.strip_prefix(root()).unwrap().to_path_buf())
        .collect();
    assert!(!found.is_empty(), "docs/ holds no Markdown page");
    found.sort();
    pages.extend(found);
    pages
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Whether `line` opens or closes a fenced code block.
fn is_fence(line: &str) -> bool {
    let t = line.trim_start();
    line.len() - t.len() <= 3 && (t.starts_with("```") || t.starts_with("~~~"))
}

/// The text of `markdown` outside fenced code blocks and inline code spans,
/// line for line (what is left out becomes blanks, so line numbers hold).
fn prose(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in markdown.lines() {
        if is_fence(line) {
            fenced = !fenced;
            lines.push(String::new());
        } else if fenced {
            lines.push(String::new());
        } else {
            lines.push(without_code_spans(line));
        }
    }
    lines
}

/// `line` with each inline code span (a run of backticks up to the next run
/// of the same length) blanked out.
fn without_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let run_at = |i: usize| chars[i..].iter().take_while(|&&c| c == '`').count();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let n = run_at(i);
        let mut j = i + n;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                out.extend(std::iter::repeat_n(' ', j + n - i));
                i = j + n;
            }
            None => {
                out.extend(&chars[i..i + n]);
                i += n;
            }
        }
    }
    out
}

/// One link: where it is, what it shows and where it leads.
struct Link {
    line: usize,
    text: String,
    target: String,
}

/// The inline links and images (`[text](target)`, `![alt](target)`) and
/// link reference definitions (`[label]: target`) of `markdown`, outside code.
fn links(markdown: &str) -> Vec<Link> {
    let lines = prose(markdown);
    let mut found = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix('[') {
            if let Some((label, target)) = rest.split_once("]:") {
                if !label.contains(']') {
                    let target = target.split_whitespace().next().unwrap_or("");
                    found.push(Link { line: n + 1, text: label.to_owned(), target: unangle(target) });
                }
            }
        }
    }
    // Inline links may wrap their text over lines, never their target.
    let text = lines.join("\n");
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find("](").map(|i| i + from) {
        from = at + 2;
        // The link text: back to the `[` that this `]` closes.
        let mut depth = 0usize;
        let mut start = None;
        for i in (0..at).rev() {
            match bytes[i] {
                b']' => depth += 1,
                b'[' if depth == 0 => {
                    start = Some(i);
                    break;
                }
                b'[' => depth -= 1,
                _ => {}
            }
        }
        let Some(start) = start else { continue };
        // The target: up to the `)` that closes the `(`, nested parentheses allowed.
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in text[at + 2..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = Some(at + 2 + i);
                    break;
                }
                ')' => depth -= 1,
                '\n' => break,
                _ => {}
            }
        }
        let Some(end) = end else { continue };
        let inside = text[at + 2..end].trim();
        let target = inside.split_whitespace().next().unwrap_or("");
        let line = text[..at].matches('\n').count() + 1;
        let shown = text[start + 1..at].split_whitespace().collect::<Vec<_>>().join(" ");
        found.push(Link { line, text: shown, target: unangle(target) });
    }
    found
}

fn unangle(target: &str) -> String {
    target.strip_prefix('<').and_then(|t| t.strip_suffix('>')).unwrap_or(target).to_owned()
}

fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    ["http://", "https://", "mailto:"].iter().any(|scheme| lower.starts_with(scheme))
}

/// A heading's anchor by GitHub's rules: the heading's text (inline code,
/// emphasis and links reduced to their text) lower-cased, every character
/// that is not a letter, a digit, `_`, `-` or a space removed, and each space
/// made a hyphen. Duplicates are told apart by the caller (`-1`, `-2`, ...).
fn slug(heading: &str) -> String {
    let mut text = String::new();
    // Links keep their text: `[text](target)` becomes `text`.
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](").map(|i| i + open) else { break };
        let Some(close) = rest[mid..].find(')').map(|i| i + mid) else { break };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..mid]);
        rest = &rest[close + 1..];
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every heading anchor of `markdown` (ATX headings outside code blocks),
/// duplicates numbered as GitHub numbers them.
fn anchors(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for line in markdown.lines() {
        if is_fence(line) {
            fenced = !fenced;
            continue;
        }
        if fenced || line.starts_with("    ") {
            continue;
        }
        let t = line.trim_start();
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let rest = &t[hashes..];
        if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
            continue;
        }
        // A closing run of #s is not part of the heading.
        let mut text = rest.trim();
        let stripped = text.trim_end_matches('#');
        if stripped.is_empty() || stripped.ends_with(' ') {
            text = stripped.trim_end();
        }
        let base = slug(text);
        let count = seen.entry(base.clone()).or_insert(0);
        out.push(if *count == 0 { base.clone() } else { format!("{base}-{count}") });
        *count += 1;
    }
    out
}

/// `path` with `.` and `..` resolved lexically (from the root).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[test]
fn headings_get_githubs_anchors() {
    assert_eq!(slug("How loading works"), "how-loading-works");
    assert_eq!(
        slug("The archive: a contract other tools can rely on"),
        "the-archive-a-contract-other-tools-can-rely-on"
    );
    assert_eq!(slug("Live capture (the bot)"), "live-capture-the-bot");
    assert_eq!(slug("`drop-index`"), "drop-index");
    assert_eq!(slug("What changed, and what was measured on the way"), "what-changed-and-what-was-measured-on-the-way");
    assert_eq!(slug("[Benchmarks](docs/benchmarks.md) on **GPU**s"), "benchmarks-on-gpus");
    assert_eq!(slug("snake_case and café"), "snake_case-and-café");
    assert_eq!(anchors("# A\n## A\n```\n# not a heading\n```\n### A ###\n"), ["a", "a-1", "a-2"]);
    let blanked = without_code_spans("a `[x](y)` b ``c ` d`` e");
    assert_eq!(blanked.split_whitespace().collect::<Vec<_>>(), ["a", "b", "e"], "{blanked:?}");
    assert_eq!(blanked.chars().count(), "a `[x](y)` b ``c ` d`` e".chars().count());
}

#[test]
fn links_in_the_readme_and_docs_lead_somewhere() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        let dir = page.parent().unwrap_or(Path::new("")).to_path_buf();
        for link in links(&text) {
            if link.target.is_empty() {
                broken.push(format!("{}:{}: [{}]() has no target", page.display(), link.line, link.text));
                continue;
            }
            if is_external(&link.target) {
                continue;
            }
            checked += 1;
            let (file, anchor) = match link.target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (link.target.as_str(), None),
            };
            let target = if file.is_empty() { page.clone() } else { normalize(&dir.join(file)) };
            let here = format!("{}:{}: [{}]({})", page.display(), link.line, link.text, link.target);
            if !root().join(&target).exists() {
                broken.push(format!("{here}: {} does not exist", target.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if target.extension().is_none_or(|x| x != "md") {
                broken.push(format!("{here}: a #fragment into {}, which is not a Markdown page", target.display()));
                continue;
            }
            let known = anchors(&read(&target));
            if !known.iter().any(|a| a == anchor) {
                broken.push(format!(
                    "{here}: {} has no heading with the anchor #{anchor} (its anchors: {})",
                    target.display(),
                    known.join(", ")
                ));
            }
        }
    }
    assert!(checked > 20, "only {checked} internal links found: is the link finder broken?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_docs_page_is_linked_from_the_readme_or_another_page() {
    let pages = pages();
    let mut linked = std::collections::BTreeSet::new();
    for page in &pages {
        let dir = page.parent().unwrap_or(Path::new("")).to_path_buf();
        for link in links(&read(page)) {
            let file = link.target.split('#').next().unwrap_or("");
            if !file.is_empty() && !is_external(&link.target) {
                let target = normalize(&dir.join(file));
                if &target != page {
                    linked.insert(target);
                }
            }
        }
    }
    // README.md is the entry; every page under docs/ must be reachable.
    let orphans: Vec<String> = pages
        .iter()
        .filter(|p| p.as_path() != Path::new("README.md") && !linked.contains(*p))
        .map(|p| p.display().to_string())
        .collect();
    assert!(orphans.is_empty(), "pages under docs/ that no other page links to: {}", orphans.join(", "));
}

#[test]
fn the_readmes_test_command_is_what_ci_runs() {
    let readme = read(Path::new("README.md"));
    let mut lines = readme.lines();
    lines.find(|l| l.trim() == "# Test (what CI runs)").expect("README.md has no `# Test (what CI runs)` line");
    let command = lines.next().expect("README.md: nothing after `# Test (what CI runs)`").trim();
    let ci = read(Path::new(".ci/run"));
    // What .ci/run runs: its lines that are not comments.
    let runs: Vec<&str> = ci.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let steps: Vec<&str> = command.split("&&").map(str::trim).collect();
    assert!(
        steps.contains(&"cargo test --locked --workspace"),
        "README.md's test command does not run `cargo test --locked --workspace`: {command}"
    );
    for step in &steps {
        assert!(
            runs.iter().any(|l| l.contains(step)),
            "README.md's test command runs `{step}`, which .ci/run does not:\nREADME: {command}\n.ci/run:\n{}",
            runs.join("\n")
        );
    }
    // And the other way: each script .ci/run starts is named in the README's command.
    for line in &runs {
        let first = line.split_whitespace().find(|w| !w.contains('=')).unwrap_or("");
        if first.starts_with("scripts/") {
            assert!(
                steps.iter().any(|s| s.split_whitespace().next() == Some(first)),
                ".ci/run runs `{line}`, which README.md's test command does not name: {command}"
            );
        }
    }
}
