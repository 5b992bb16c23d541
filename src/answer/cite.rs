//! Citations in what a model wrote, checked: `[n]` (also `[1, 2]`,
//! `[1][2]`, `[1-3]`, `[source 2]`) that names a source the prompt held is
//! kept, written as `[1][2]`; any other is dropped from the text. An answer
//! left without a citation is no answer.
//!
//! [`Cleaner`] does this as the text arrives, so that what is streamed to a
//! reader is the checked text: nothing is released before the first valid
//! citation (an answer that never cites is never shown), and a citation is
//! held until its `]` decides it. [`check`] is the same over a whole text.

use std::collections::BTreeSet;

/// Longest citation group looked at (`[1, 2, 3, 4]`); a longer one is text.
const MAX_GROUP: usize = 48;

/// A checked text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The text with only valid citations, each as `[n]`; trimmed.
    pub text: String,
    /// The sources cited (1-based numbers), ascending.
    pub cited: Vec<usize>,
    /// Citations dropped (numbers that name no source).
    pub dropped: usize,
}

impl Checked {
    /// Whether the text cites a source: else it is not shown as an answer.
    pub fn found(&self) -> bool {
        !self.cited.is_empty()
    }
}

/// `text`'s citations checked against `valid` (the sources' 1-based numbers).
pub fn check(text: &str, valid: &[usize]) -> Checked {
    let mut c = Cleaner::new(valid);
    c.push(text);
    c.finish().1
}

/// Checks a text as it arrives, piece by piece.
#[derive(Debug)]
pub struct Cleaner {
    valid: BTreeSet<usize>,
    /// The checked text so far.
    text: String,
    /// How much of `text` was released.
    released: usize,
    /// Whitespace not yet written: what follows decides.
    space: String,
    /// An open `[...` that may be a citation.
    group: Option<String>,
    /// Whether the last thing seen was a dropped citation (the space before
    /// it is then not written before punctuation).
    after_drop: bool,
    cited: BTreeSet<usize>,
    dropped: usize,
}

impl Cleaner {
    pub fn new(valid: &[usize]) -> Cleaner {
        Cleaner {
            valid: valid.iter().copied().collect(),
            text: String::new(),
            released: 0,
            space: String::new(),
            group: None,
            after_drop: false,
            cited: BTreeSet::new(),
            dropped: 0,
        }
    }

    /// Takes the next piece; returns the checked text that may now be shown
    /// (nothing until a valid citation has been seen).
    pub fn push(&mut self, piece: &str) -> String {
        for c in piece.chars() {
            self.char(c);
        }
        self.release()
    }

    /// Ends the text: returns what is left to show, and the whole checked text.
    pub fn finish(mut self) -> (String, Checked) {
        if let Some(group) = self.group.take() {
            self.write(&group);
        }
        let rest = self.release();
        let checked = Checked {
            text: self.text.trim().to_owned(),
            cited: self.cited.into_iter().collect(),
            dropped: self.dropped,
        };
        (rest, checked)
    }

    fn release(&mut self) -> String {
        if self.cited.is_empty() {
            return String::new();
        }
        let out = self.text[self.released..].to_owned();
        self.released = self.text.len();
        out
    }

    fn char(&mut self, c: char) {
        if let Some(group) = &mut self.group {
            if c == ']' {
                group.push(c);
                let group = self.group.take().expect("open");
                self.close(&group);
                return;
            }
            if allowed_in_group(c) && group.len() < MAX_GROUP {
                group.push(c);
                return;
            }
            // Not a citation: text, and `c` starts afresh.
            let group = self.group.take().expect("open");
            self.write(&group);
        }
        if c == '[' {
            self.group = Some("[".to_owned());
        } else if c.is_whitespace() {
            if !self.after_drop || self.space.is_empty() {
                self.space.push(c);
            } else if c == '\n' && !self.space.contains('\n') {
                self.space = "\n".to_owned();
            }
        } else {
            if self.after_drop && matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | ')') {
                self.space.clear();
            }
            self.write(c.encode_utf8(&mut [0; 4]));
        }
    }

    /// A complete `[...]`: a citation (kept with its valid numbers, or
    /// dropped), or text.
    fn close(&mut self, group: &str) {
        let Some(numbers) = parse_group(&group[1..group.len() - 1]) else {
            self.write(group);
            return;
        };
        let mut kept: Vec<usize> = Vec::new();
        for n in numbers {
            if !self.valid.contains(&n) {
                self.dropped += 1;
            } else if !kept.contains(&n) {
                kept.push(n);
            }
        }
        if kept.is_empty() {
            self.after_drop = true;
            return;
        }
        self.cited.extend(&kept);
        let canonical: String = kept.iter().map(|n| format!("[{n}]")).collect();
        self.write(&canonical);
    }

    /// Writes text after the pending space (none at the start).
    fn write(&mut self, s: &str) {
        if !self.text.is_empty() {
            self.text.push_str(&self.space);
        }
        self.space.clear();
        self.after_drop = false;
        self.text.push_str(s);
    }
}

/// What may appear inside a citation group before its `]`.
fn allowed_in_group(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, ' ' | ',' | ';' | '-' | '–') || "sourceandSOURCEAND".contains(c)
}

/// The numbers a citation group's inside names (`1, 2`, `1-3`, `source 2`,
/// `sources 1 and 2`); None when it is not a citation.
fn parse_group(inside: &str) -> Option<Vec<usize>> {
    let mut numbers = Vec::new();
    for token in inside.replace([',', ';'], " ").split_whitespace() {
        let token = token.to_ascii_lowercase();
        if matches!(token.as_str(), "source" | "sources" | "and") {
            continue;
        }
        let number = |t: &str| -> Option<usize> {
            (!t.is_empty() && t.len() <= 3 && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok()).flatten()
        };
        match token.split_once(['-', '–']) {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if b < a || b - a > 20 {
                    return None;
                }
                numbers.extend(a..=b);
            }
            None => numbers.push(number(&token)?),
        }
    }
    (!numbers.is_empty()).then_some(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(text: &str) -> (String, Vec<usize>, usize) {
        let c = check(text, &[1, 2, 3]);
        (c.text, c.cited, c.dropped)
    }

    #[test]
    fn valid_citations_are_kept_in_one_form() {
        assert_eq!(checked("Restart it [1]."), ("Restart it [1].".into(), vec![1], 0));
        assert_eq!(checked("Yes [1, 2] and no [3]"), ("Yes [1][2] and no [3]".into(), vec![1, 2, 3], 0));
        assert_eq!(checked("Yes [2][1]."), ("Yes [2][1].".into(), vec![1, 2], 0));
        assert_eq!(checked("Yes [1-3]."), ("Yes [1][2][3].".into(), vec![1, 2, 3], 0));
        assert_eq!(checked("Yes [Source 2]; [sources 1 and 3]"), ("Yes [2]; [1][3]".into(), vec![1, 2, 3], 0));
        assert_eq!(checked("Twice [1, 1]"), ("Twice [1]".into(), vec![1], 0));
    }

    #[test]
    fn citations_of_sources_that_do_not_exist_are_dropped() {
        assert_eq!(checked("It works [7]. It does [1]."), ("It works. It does [1].".into(), vec![1], 1));
        assert_eq!(checked("A [0] B [1]"), ("A B [1]".into(), vec![1], 1));
        assert_eq!(checked("A [1, 4, 2]"), ("A [1][2]".into(), vec![1, 2], 1));
        assert_eq!(checked("[9] Starts [3]"), ("Starts [3]".into(), vec![3], 1));
        assert_eq!(checked("A [9][1]."), ("A [1].".into(), vec![1], 1));
        assert_eq!(checked("A [9]\nB [2]"), ("A\nB [2]".into(), vec![2], 1));
        // Four digits are a year, not a citation.
        assert_eq!(checked("In [2024] [2]"), ("In [2024] [2]".into(), vec![2], 0));
    }

    #[test]
    fn an_answer_that_cites_nothing_valid_is_no_answer() {
        for text in ["The deploy uses make.", "It works [4][5].", "See [docs](https://x) [a]", ""] {
            let c = check(text, &[1, 2, 3]);
            assert!(!c.found(), "{text}: {c:?}");
        }
        assert!(!check("It works [1].", &[]).found());
        // Other brackets are text.
        let c = check("Use [docs](https://x), `v[2]` and [ ] [1]", &[1, 2]);
        assert_eq!(c.text, "Use [docs](https://x), `v[2]` and [ ] [1]");
        assert_eq!(c.cited, [1, 2]);
        assert_eq!(check("unclosed [1", &[1]).text, "unclosed [1");
    }

    #[test]
    fn streaming_releases_the_checked_text_only_after_a_valid_citation() {
        let text = "[7] The chart restarts with helm [9]. Run `helm upgrade` [1, 8] then check [2-3]; done [x].";
        let whole = check(text, &[1, 2]);
        assert_eq!(whole.text, "The chart restarts with helm. Run `helm upgrade` [1] then check [2]; done [x].");
        for size in [1, 2, 3, 5, 7, 100] {
            let mut c = Cleaner::new(&[1, 2]);
            let mut shown = String::new();
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(size) {
                let piece: String = piece.iter().collect();
                let out = c.push(&piece);
                if !shown.is_empty() || !out.is_empty() {
                    // Once shown, always the start of the checked text.
                    shown.push_str(&out);
                    assert!(whole.text.starts_with(shown.trim_end()), "{size}: {shown:?}");
                }
            }
            let (rest, checked) = c.finish();
            shown.push_str(&rest);
            assert_eq!(checked, whole);
            assert_eq!(shown.trim(), whole.text, "{size}");
        }
        // Nothing is shown of an answer without a valid citation.
        let mut c = Cleaner::new(&[1]);
        assert_eq!(c.push("It is so [4]."), "");
        assert_eq!(c.finish().0, "");
        // Text before the first citation is held, then released with it.
        let mut c = Cleaner::new(&[1]);
        assert_eq!(c.push("It is so "), "");
        assert_eq!(c.push("[1"), "");
        assert_eq!(c.push("]. More"), "It is so [1]. More");
    }
}
