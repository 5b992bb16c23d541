//! Text handling for search: turning a question into an FTS5 keyword query,
//! choosing the line of a chunk that best matches the question, and trimming
//! a chunk's text around it (the line a result links to marked with [`MARK`]).

use std::cmp::Reverse;

use qdrant_rust_stemmers::{Algorithm, Stemmer};

/// Words too common to help a keyword search.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been", "before",
    "being", "but", "by", "can", "could", "did", "do", "does", "doing", "for", "from", "get", "got", "had", "has",
    "have", "having", "he", "her", "here", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just",
    "me", "my", "no", "not", "now", "of", "on", "or", "our", "out", "she", "should", "so", "some", "than", "that",
    "the", "their", "them", "then", "there", "these", "they", "this", "those", "to", "too", "up", "us", "was", "we",
    "were", "what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your", "anyone",
    "someone", "know", "does", "way", "there's", "what's", "it's", "i'm", "we're",
];

/// One searchable unit of a question: a word, or a phrase (a quoted part, or
/// a code-like token such as `ERR_KEY_EXPIRED` or `cargo.toml`, kept in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub words: Vec<String>,
}

impl Term {
    /// The term as an FTS5 phrase (its words, quoted: FTS syntax in a question stays text).
    pub fn phrase(&self) -> String {
        format!("\"{}\"", self.words.join(" "))
    }

    /// Whether these stemmed words (of a line or a text, see [`stems`]) hold
    /// the term, in order.
    fn found_in(&self, stemmed: &[String]) -> bool {
        let own = stems(&self.words);
        stemmed.windows(own.len()).any(|w| w == own.as_slice())
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect()
}

/// The terms of a question, in order, without repeats and stopwords (unless
/// nothing else is left).
pub fn terms(question: &str) -> Vec<Term> {
    let mut out: Vec<Term> = Vec::new();
    let push = |t: Term, out: &mut Vec<Term>| {
        if !t.words.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    };
    // Quoted parts are phrases; the rest is split on whitespace.
    let mut rest = String::new();
    for (i, part) in question.split(['"', '`', '“', '”']).enumerate() {
        if i % 2 == 1 {
            push(Term { words: words(part) }, &mut out);
        } else {
            rest.push(' ');
            rest.push_str(part);
        }
    }
    let mut plain = Vec::new();
    for token in rest.split_whitespace() {
        let token = token.trim_matches(|c: char| !c.is_alphanumeric());
        let w = words(token);
        if w.len() > 1 {
            // Code-like: error strings, paths, dotted names, flags.
            push(Term { words: w }, &mut out);
        } else if let Some(w) = w.into_iter().next() {
            plain.push(w);
        }
    }
    let keep: Vec<&String> =
        plain.iter().filter(|w| !STOPWORDS.contains(&w.as_str()) && w.chars().count() > 1).collect();
    let chosen: Vec<&String> = if keep.is_empty() && out.is_empty() { plain.iter().collect() } else { keep };
    for w in chosen {
        push(Term { words: vec![w.clone()] }, &mut out);
    }
    out
}

/// An FTS5 query matching any of the terms (bm25 ranks messages that match
/// more, and rarer, terms first). None when the question has no words.
pub fn fts_query(terms: &[Term]) -> Option<String> {
    joined(terms, " OR ")
}

/// An FTS5 query matching only messages that have every term.
pub fn fts_query_all(terms: &[Term]) -> Option<String> {
    joined(terms, " AND ")
}

fn joined(terms: &[Term], operator: &str) -> Option<String> {
    let parts: Vec<String> = terms.iter().map(Term::phrase).collect();
    (!parts.is_empty()).then(|| parts.join(operator))
}

/// How well a line matches: distinct terms found (phrases count double).
fn line_score(line: &str, terms: &[Term]) -> usize {
    let lw = stems(&words(line));
    terms.iter().filter(|t| t.found_in(&lw)).map(|t| if t.words.len() > 1 { 2 } else { 1 }).sum()
}

/// English stems of lower-cased words ("keys" → "key", "rotating" and
/// "rotation" → "rotat"), as the keyword index matches them: FTS5 stems with
/// Porter's algorithm, this with its successor (Snowball English), which
/// agrees on all but rare words. Matching the index's notion of a word keeps
/// coverage weights in step with what FTS matched.
fn stems(words: &[String]) -> Vec<String> {
    let stemmer = Stemmer::create(Algorithm::English);
    words.iter().map(|w| stemmer.stem(w).into_owned()).collect()
}

/// The share of the question a text covers: the summed weights of the terms
/// it contains over the summed weights of all terms (0 when there are none).
pub fn coverage(text: &str, terms: &[Term], weights: &[f64]) -> f64 {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let tw = stems(&words(text));
    let found: f64 = terms.iter().zip(weights).filter(|(t, _)| t.found_in(&tw)).map(|(_, w)| w).sum();
    found / total
}

/// BM25's inverse document frequency of a term in `df` of `n` documents.
pub fn idf(df: u64, n: u64) -> f64 {
    let (df, n) = (df as f64, n.max(df) as f64);
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// Of the lines at `among` (indices into `lines`), the one that holds most
/// of the question (distinct terms; phrases count double), the earliest of
/// equals. None when `among` is empty.
pub fn best_line(lines: &[&str], terms: &[Term], among: &[usize]) -> Option<usize> {
    among.iter().copied().filter(|&i| i < lines.len()).max_by_key(|&i| (line_score(lines[i], terms), Reverse(i)))
}

/// What leads the line of a result's text that its link and time are of.
pub const MARK: &str = "» ";

/// The chunk's text cut to about `max_chars` around its best-matching lines
/// (whole lines; "…" marks what was cut). Text without a match keeps its start.
pub fn trim(text: &str, terms: &[Term], max_chars: usize) -> String {
    snippet(text, terms, max_chars, None)
}

/// The chunk's text cut to about `max_chars` around line `focus` (without
/// one, around its best-matching lines), as [`trim`] cuts it; `focus` is
/// led by [`MARK`] when the text has more than one line, so a reader sees
/// which line the result is about.
pub fn snippet(text: &str, terms: &[Term], max_chars: usize, focus: Option<usize>) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mark = focus.filter(|&f| f < lines.len() && lines.len() > 1);
    let shown = |i: usize| -> String {
        if mark == Some(i) {
            format!("{MARK}{}", lines[i])
        } else {
            lines[i].to_owned()
        }
    };
    let mark_chars = if mark.is_some() { MARK.chars().count() } else { 0 };
    if text.chars().count() + mark_chars <= max_chars || lines.is_empty() {
        return match mark {
            Some(_) => (0..lines.len()).map(shown).collect::<Vec<_>>().join("\n"),
            None => text.to_owned(),
        };
    }
    let scores: Vec<usize> = lines.iter().map(|l| line_score(l, terms)).collect();
    let best = focus
        .filter(|&f| f < lines.len())
        .unwrap_or_else(|| (0..lines.len()).max_by_key(|&i| (scores[i], Reverse(i))).unwrap_or(0));
    let len = |i: usize| shown(i).chars().count() + 1;
    let (mut lo, mut hi) = (best, best + 1);
    let mut used = len(best);
    // Grow around the best line, preferring matching lines, then the line before (the question).
    loop {
        let before = (lo > 0).then(|| lo - 1);
        let after = (hi < lines.len()).then_some(hi);
        let pick = match (before, after) {
            (Some(b), Some(a)) => {
                if scores[a] > scores[b] {
                    a
                } else {
                    b
                }
            }
            (Some(b), None) => b,
            (None, Some(a)) => a,
            (None, None) => break,
        };
        if used + len(pick) > max_chars {
            break;
        }
        used += len(pick);
        if pick < lo {
            lo = pick;
        } else {
            hi = pick + 1;
        }
    }
    let mut out = String::new();
    if lo > 0 {
        out.push_str("…\n");
    }
    let body = (lo..hi).map(shown).collect::<Vec<_>>().join("\n");
    if body.chars().count() > max_chars {
        // One very long line: cut it around its first match (the mark kept).
        if mark == Some(best) {
            out.push_str(MARK);
        }
        out.push_str(&cut_line(lines[best], terms, max_chars.saturating_sub(mark_chars).max(1)));
    } else {
        out.push_str(&body);
    }
    if hi < lines.len() {
        out.push_str("\n…");
    }
    out
}

/// A chunk line's speaker (`Alice` of `Alice: …` or of `Alice (replying to
/// Bob: "…"): …`, with a thread title before it) and where what they said
/// begins (a byte offset).
fn speaker(line: &str) -> Option<(&str, usize)> {
    let said = line.find(": ")?;
    let (who, start) = match line.find(" (replying to ") {
        Some(reply) if reply < said => {
            let rest = &line[reply..];
            let end = rest.find("\"): ").map(|q| q + 4).or_else(|| rest.find("): ").map(|q| q + 3))?;
            (&line[..reply], reply + end)
        }
        _ => (&line[..said], said + 2),
    };
    (who.chars().count() <= 120).then_some((who, start))
}

/// One line cut to about `max_chars` around its first match, its speaker
/// kept in front (a reply's quote goes first).
fn cut_line(line: &str, terms: &[Term], max_chars: usize) -> String {
    if let Some((who, start)) = speaker(line) {
        let room = max_chars.saturating_sub(who.chars().count() + 2);
        if room >= 20 {
            return format!("{who}: {}", cut_words(&line[start..], terms, room));
        }
    }
    cut_words(line, terms, max_chars)
}

fn cut_words(line: &str, terms: &[Term], max_chars: usize) -> String {
    let lower = line.to_lowercase();
    let at = terms
        .iter()
        .filter_map(|t| lower.find(t.words[0].as_str()))
        .min()
        .map_or(0, |byte| lower[..byte].chars().count());
    let chars: Vec<char> = line.chars().collect();
    let start = at.saturating_sub(max_chars / 3).min(chars.len().saturating_sub(max_chars));
    let end = (start + max_chars).min(chars.len());
    let mut s = String::new();
    if start > 0 {
        s.push('…');
    }
    s.extend(&chars[start..end]);
    if end < chars.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(words: &[&str]) -> Term {
        Term { words: words.iter().map(|w| w.to_string()).collect() }
    }

    #[test]
    fn questions_become_terms_without_stopwords() {
        assert_eq!(terms("How do I rotate the notary keys?"), vec![t(&["rotate"]), t(&["notary"]), t(&["keys"])]);
        assert_eq!(
            terms("what does ERR_NOTARY_KEY_EXPIRED mean"),
            vec![t(&["err", "notary", "key", "expired"]), t(&["mean"])]
        );
        assert_eq!(
            terms("error \"connection reset by peer\" again"),
            vec![t(&["connection", "reset", "by", "peer"]), t(&["error"])]
        );
        // Only stopwords: keep them rather than search for nothing.
        assert_eq!(terms("who is it"), vec![t(&["who"]), t(&["is"]), t(&["it"])]);
        assert!(terms("?!  ...").is_empty());
    }

    #[test]
    fn fts_queries_quote_every_term() {
        let q = fts_query(&terms("cargo.toml OR \"NEAR\" AND x")).unwrap();
        assert_eq!(q, "\"near\" OR \"cargo toml\"");
        assert_eq!(fts_query(&[]), None);
        assert_eq!(fts_query_all(&terms("alpha beta")).unwrap(), "\"alpha\" AND \"beta\"");
    }

    #[test]
    fn coverage_weighs_rare_terms_more() {
        let terms = terms("rotate the notary keys");
        let weights = [idf(500, 1000), idf(2, 1000), idf(100, 1000)];
        assert!(weights[1] > weights[2] && weights[2] > weights[0]);
        assert_eq!(coverage("Alice: we rotated the notary key yesterday", &terms, &weights), 1.0);
        let only_common = coverage("Bob: rotate it", &terms, &weights);
        let only_rare = coverage("Bob: notary", &terms, &weights);
        assert!(only_common < only_rare && only_rare < 1.0, "{only_common} {only_rare}");
        assert_eq!(coverage("nothing here", &terms, &weights), 0.0);
        assert_eq!(coverage("x", &[], &[]), 0.0);
    }

    #[test]
    fn trimming_keeps_the_best_lines() {
        let text = (0..40).map(|i| format!("Alice: line number {i} about nothing")).collect::<Vec<_>>().join("\n")
            + "\nBob: the notary keys rotate on Fridays\nCarol: thanks";
        let out = trim(&text, &terms("notary keys"), 200);
        assert!(out.contains("Bob: the notary keys rotate on Fridays"), "{out}");
        assert!(out.starts_with("…\n"));
        assert!(out.chars().count() <= 200 + 4);
        // Short text is returned whole.
        assert_eq!(trim("a: b", &terms("b"), 200), "a: b");
        // A single long line is cut around its match.
        let long = format!("{} needle {}", "x ".repeat(300), "y ".repeat(300));
        let out = trim(&long, &terms("needle"), 100);
        assert!(out.contains("needle") && out.chars().count() <= 102, "{out}");
        // A long message keeps its speaker in front; a reply's quote goes first.
        let said = format!("{} needle {}", "x ".repeat(300), "y ".repeat(300));
        let out = trim(&format!("Alice: {said}"), &terms("needle"), 100);
        assert!(out.starts_with("Alice: …") && out.contains("needle") && out.chars().count() <= 102, "{out}");
        let out = trim(&format!("Bob (replying to Alice: \"why: this\"): {said}"), &terms("needle"), 100);
        assert!(out.starts_with("Bob: …") && out.contains("needle") && !out.contains("replying"), "{out}");
    }

    #[test]
    fn snippets_show_and_mark_the_line_a_result_is_about() {
        let lines = ["Alice: the notary keys", "Bob: rotate the notary keys weekly", "Carol: ok", "Dan: notary"];
        let question = terms("rotate notary keys");
        assert_eq!(best_line(&lines, &question, &[0, 1, 2, 3]), Some(1), "most of the question");
        assert_eq!(best_line(&lines, &question, &[2, 3]), Some(3), "only among these");
        assert_eq!(best_line(&lines, &question, &[2]), Some(2), "no match: still one of them");
        assert_eq!(best_line(&lines, &question, &[]), None);
        // Short text: whole, its focus marked.
        let text = lines.join("\n");
        let out = snippet(&text, &question, 600, Some(3));
        assert_eq!(out.lines().filter(|l| l.starts_with(MARK)).collect::<Vec<_>>(), ["» Dan: notary"]);
        assert_eq!(snippet(&text, &question, 600, None), text);
        assert_eq!(snippet("Alice: alone", &question, 600, Some(0)), "Alice: alone", "one line needs no mark");
        // Long text: cut around the focus, not around the best-matching line.
        let long = (0..40).map(|i| format!("Alice: line number {i} about nothing")).collect::<Vec<_>>().join("\n")
            + "\nBob: the notary keys rotate on Fridays";
        let out = snippet(&long, &question, 200, Some(5));
        assert!(out.contains("» Alice: line number 5 about") && !out.contains("Fridays"), "{out}");
        assert!(out.chars().count() <= 200 + 4, "{out}");
        // One very long focus line: cut around its match, still marked.
        let text = format!("Alice: hi\nBob: {} needle {}", "x ".repeat(300), "y ".repeat(300));
        let out = snippet(&text, &terms("needle"), 100, Some(1));
        assert!(out.starts_with("…\n» ") && out.contains("needle") && out.chars().count() <= 104, "{out}");
    }
}
