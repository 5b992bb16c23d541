//! From Tesseract's words to the text kept: the confidence filter and the
//! layout of the result. Pure functions, tested without Tesseract.

use super::Recognized;

/// Words Tesseract is less sure of than this (its 0..100 word confidence)
/// are dropped.
///
/// Measured with Tesseract 5.3 (LSTM, eng) on the fixtures and on real
/// photographs: words that are really there score 84..97 in clean
/// screenshots, through JPEG and in the dark theme, and 64..81 in harder
/// places (a short word next to a timestamp, a caption over a photo); the
/// strings Tesseract makes of texture, pin headers and foliage score 0..69,
/// mostly under 50. 60 keeps the real words and drops most inventions; the
/// rules below catch the rest, so that a picture without text gives empty
/// text rather than a line of junk.
pub const MIN_WORD_CONFIDENCE: f32 = 60.0;

/// A word alone on its line needs this much. Inventions come one to a line
/// ("ve" 61, "pes" 63, "pc" 69 in a photograph of a circuit board), while
/// real text comes in lines of several words, each scored in context.
pub const MIN_LONE_WORD_CONFIDENCE: f32 = 75.0;

/// Words with no letter or digit ("@", "|", "—", "'") and one-character
/// words are what Tesseract reads into icons, bullets and borders; they need
/// this much, and a line with nothing else is dropped whatever its
/// confidence ("-" 90, "4" 97 seen in pictures without text).
pub const MIN_NOISE_CONFIDENCE: f32 = 80.0;

/// A word in a line of confidently read words needs only this much. Made-up
/// words score low whatever their print: the recognizer's language model
/// does not know them, and they are what people search for in screenshots
/// (error codes, hashes, host names: "zantav0751" 57 in a clean line whose
/// other words scored 91..97). Texture does not come in lines of confident
/// words, so the context vouches for the word.
pub const MIN_WORD_IN_CONFIDENT_LINE: f32 = 30.0;

/// Confidence of a line's other words that makes it a confident line (at
/// least [`CONFIDENT_LINE_WORDS`] of them, not noise-shaped).
pub const CONFIDENT_LINE: f32 = 85.0;
pub const CONFIDENT_LINE_WORDS: usize = 2;

/// One word as Tesseract's result iterator gives it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Word {
    pub text: String,
    /// 0..100.
    pub confidence: f32,
    /// Whether this word begins a text line.
    pub starts_line: bool,
}

/// A one-character word, or one without a letter or digit.
fn noise_shaped(text: &str) -> bool {
    text.chars().count() < 2 || !text.chars().any(char::is_alphanumeric)
}

/// Whether a word passes the confidence rule; `alone` when it is the only
/// word of its line, `vouched` when the line's other words are confident.
pub(super) fn keep(text: &str, confidence: f32, alone: bool, vouched: bool) -> bool {
    let needed = if noise_shaped(text) {
        MIN_NOISE_CONFIDENCE
    } else if alone {
        MIN_LONE_WORD_CONFIDENCE
    } else if vouched {
        MIN_WORD_IN_CONFIDENT_LINE
    } else {
        MIN_WORD_CONFIDENCE
    };
    !text.is_empty() && confidence >= needed
}

/// The kept words, one line of text per text line (lines left with no word,
/// or with noise-shaped words only, disappear), words separated by one space,
/// whitespace inside words collapsed, the whole trimmed.
pub(super) fn assemble(words: impl IntoIterator<Item = Word>) -> Recognized {
    let mut lines: Vec<Vec<Word>> = Vec::new();
    for mut word in words {
        word.text = word.text.split_whitespace().collect::<Vec<_>>().join(" ");
        if word.text.is_empty() {
            continue;
        }
        match lines.last_mut() {
            Some(line) if !word.starts_line => line.push(word),
            _ => lines.push(vec![word]),
        }
    }

    let mut text = Vec::new();
    let mut confidence_sum = 0.0f64;
    let mut kept = 0usize;
    for line in &lines {
        let alone = line.len() == 1;
        let confident = |w: &Word| !noise_shaped(&w.text) && w.confidence >= CONFIDENT_LINE;
        let confident_words = line.iter().filter(|w| confident(w)).count();
        let words: Vec<&Word> = line
            .iter()
            .filter(|w| {
                let others = confident_words - usize::from(confident(w));
                keep(&w.text, w.confidence, alone, others >= CONFIDENT_LINE_WORDS)
            })
            .collect();
        if words.iter().all(|w| noise_shaped(&w.text)) {
            continue;
        }
        confidence_sum += words.iter().map(|w| f64::from(w.confidence)).sum::<f64>();
        kept += words.len();
        text.push(words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" "));
    }
    let confidence = if kept == 0 { 0.0 } else { (confidence_sum / kept as f64) as f32 };
    Recognized { text: text.join("\n").trim().to_string(), confidence, words: kept }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str, confidence: f32, starts_line: bool) -> Word {
        Word { text: text.to_string(), confidence, starts_line }
    }

    #[test]
    fn low_confidence_words_are_dropped() {
        assert!(keep("Error", 91.0, false, false));
        assert!(keep("Error", MIN_WORD_CONFIDENCE, false, false));
        assert!(!keep("Error", MIN_WORD_CONFIDENCE - 0.1, false, false));
        assert!(!keep("Error", f32::NAN, false, true));
        assert!(!keep("", 99.0, false, true));
    }

    #[test]
    fn made_up_words_among_confident_ones_are_kept() {
        // A clean screenshot line: the unknown word scores low in context.
        let r = assemble([
            w("error:", 97.0, true),
            w("compile", 93.0, false),
            w("ref", 93.0, false),
            w("zantav0751", 57.0, false),
        ]);
        assert_eq!(r.text, "error: compile ref zantav0751");
        // Among doubtful words it is not vouched for.
        let r = assemble([w("ve", 61.0, true), w("pes", 63.0, false), w("zantav0751", 57.0, false)]);
        assert_eq!(r.text, "ve pes");
        assert!(!keep("zantav0751", MIN_WORD_IN_CONFIDENT_LINE - 1.0, false, true));
    }

    #[test]
    fn a_word_alone_on_its_line_needs_more() {
        assert!(!keep("pes", 63.0, true, false));
        assert!(keep("pes", 63.0, false, false));
        assert!(keep("hello", MIN_LONE_WORD_CONFIDENCE, true, false));
    }

    #[test]
    fn noise_shaped_words_need_more_confidence() {
        for noise in ["@", "|", "—", "'.", "a", "7"] {
            assert!(!keep(noise, 70.0, false, true), "{noise}");
            assert!(keep(noise, 90.0, false, false), "{noise}");
        }
        // Punctuation around letters or digits is a word.
        assert!(keep("(1234)", 70.0, false, false));
        assert!(keep("#general", 70.0, false, false));
    }

    #[test]
    fn lines_follow_tesseract_and_empty_lines_vanish() {
        let r = assemble([
            w("deploy", 92.0, true),
            w("failed:", 90.0, false),
            w("@", 30.0, true), // an avatar, alone on its "line"
            w("retrying", 94.0, true),
            w("in", 95.0, false),
            w("~~", 40.0, false),
            w("30s", 89.0, false),
            w("ve", 61.0, true), // texture, alone on its line
        ]);
        assert_eq!(r.text, "deploy failed:\nretrying in 30s");
        assert_eq!(r.words, 5);
        assert!((r.confidence - 92.0).abs() < 1e-4, "{}", r.confidence);
    }

    #[test]
    fn lines_of_noise_shaped_words_only_vanish() {
        // What a picture of a circuit board gave: confident dashes and digits.
        let r = assemble([w("'", 0.0, true), w("-", 90.0, false), w("4", 97.0, true), w("/", 43.0, false)]);
        assert_eq!(r.text, "");
        // Among words they stay.
        let r = assemble([w("#", 92.0, true), w("general", 96.0, false), w("-", 90.0, false)]);
        assert_eq!(r.text, "# general -");
    }

    #[test]
    fn nothing_kept_is_empty_with_zero_confidence() {
        let r = assemble([w("ii", 20.0, true), w("=", 35.0, false)]);
        assert_eq!(r, Recognized { text: String::new(), confidence: 0.0, words: 0 });
        assert_eq!(assemble([]), Recognized { text: String::new(), confidence: 0.0, words: 0 });
    }

    #[test]
    fn whitespace_inside_words_is_collapsed_and_blank_words_skipped() {
        let r = assemble([w(" a\tb ", 90.0, false), w("  ", 95.0, false), w("cd", 90.0, false)]);
        assert_eq!(r.text, "a b cd");
        assert_eq!(r.words, 2);
    }
}
