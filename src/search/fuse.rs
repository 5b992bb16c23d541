//! Step 4 of a question: one ranking from the vector and keyword lists.
//!
//! **The rule** (hybrid mode): weighted reciprocal rank fusion,
//! `score = 1/(k + rank_vector) + w · 1/(k + 1) · (k' + 1)/(k' + rank_keyword)`
//! with `k = 60` and `k' = 2`, where a keyword hit's weight is `w = 1` if
//! `c ≥ 0.6`, else 0, and `c` is the share of the question's terms (weighted
//! by their IDF in the archive) that the hit's chunk contains. A chunk missing
//! from a list adds nothing for it. Each list's first hit adds the same; the
//! keyword list's later hits add less sooner, because that list is ordered by
//! how much of the question each hit holds (see `keyword`): its first hit is
//! the best evidence it has, while the vector list's first ten are often
//! within a few hundredths of cosine of each other.
//!
//! Why: plain RRF (Cormack et al. 2009, k = 60) needs no calibration between
//! cosine and bm25 and rewards chunks both lists found, but it lets a keyword
//! list that matched only a common word of a paraphrased question push the
//! right answers out of the top results (on the retrieval fixture plain RRF
//! found 16/20, vector alone 20/20). The coverage gate keeps matches of most
//! of the question (error strings, commands, rare words, the words of a
//! support question) at full strength and makes matches of a minor part of it
//! count for nothing (with any weight, near the top of RRF even a small one
//! reorders: 1/61 and 1/63 differ by only 0.0005).
//!
//! Derived on real chat (`scripts/eval-retrieval.sh`, komodo-dev): a graded
//! weight (`c²` above 0.5, as before) sank keyword hits that matched the
//! answer's message first but missed a common word of the question ("can't",
//! the project's name) under fifty vector-only chunks. The gate at 0.6 with
//! full weight found 2 more support questions in the top 5 (hybrid R@5 0.73
//! to 0.78, R@1 0.56 to 0.58); gates of 0.7 and 0.8 and weights `c` or `√c`
//! were no better, and the fixture keeps its 23/23. When the keyword list
//! came to be ordered by coverage, the same `k = 60` on both lists lost three
//! questions' first places (hybrid R@1 0.58 to 0.53): two keyword hits that
//! hold the whole question and nearly none of it differed by 1/61 - 1/62. A
//! keyword discount `k'` of 1 to 3 gives them back (0.58; 5: 0.56, 10: 0.51);
//! a weighted sum of cosine and coverage instead of ranks was no better.
//!
//! Single modes keep their own scores: cosine (vector), the share of the
//! question the best message holds (keyword; ties were ordered by bm25).
//! Ties are broken by the better best rank, then by chunk id, so a ranking is
//! deterministic.

use std::collections::HashMap;

use super::text::{self, Term};
use super::Mode;
use crate::vector::ChunkPayload;

/// The k of reciprocal rank fusion.
pub const RRF_K: f64 = 60.0;
/// The k of the keyword list's own discount (see the module doc): its first
/// hit counts as the vector list's first, later ones fall off faster.
pub const KEYWORD_K: f64 = 2.0;
/// Keyword hits covering less of the question than this do not count in fusion.
pub const MIN_COVERAGE: f64 = 0.6;

/// A chunk in one of the ranked lists.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub guild: u64,
    pub model: String,
    pub chunk: u64,
    /// Cosine similarity, when the vector search found it.
    pub vector_score: Option<f32>,
    /// FTS5's bm25 of its best message (lower is better), when keyword search found it.
    pub bm25: Option<f64>,
    /// The share of the question (IDF-weighted) its best message holds, when
    /// keyword search found it: the keyword list's order.
    pub coverage: Option<f64>,
    /// How much a keyword hit counts in fusion (coverage², see the module doc).
    pub weight: f64,
    /// Vector hits come with it; keyword hits get it when it is needed.
    pub payload: Option<ChunkPayload>,
    /// The message keyword search matched (the chunk's best), when it found it.
    pub matched: Option<u64>,
    /// A keyword hit in a message too long for one chunk: all its pieces, in
    /// order (the one that holds the question's words is chosen when their
    /// payloads are read); empty otherwise.
    pub pieces: Vec<u64>,
    /// The messages of the point that ranked a vector hit when that was one
    /// of the chunk's parts (the lines nearest the question); empty when it
    /// was the chunk's own point.
    pub near: Vec<u64>,
}

impl Candidate {
    /// Identifies a chunk across guilds.
    pub fn key(&self) -> (u64, u64) {
        (self.guild, self.chunk)
    }
}

/// A candidate with its place in the final ranking.
#[derive(Debug, Clone)]
pub(super) struct Ranked {
    pub candidate: Candidate,
    /// The fused score (hybrid), cosine (vector) or coverage (keyword).
    pub score: f64,
    /// 1-based ranks in the vector and keyword lists, when in them.
    pub vector_rank: Option<usize>,
    pub keyword_rank: Option<usize>,
    /// The cross-encoder's score, when one reranked it.
    pub rerank_score: Option<f32>,
}

impl AsMut<Candidate> for Candidate {
    fn as_mut(&mut self) -> &mut Candidate {
        self
    }
}

impl AsMut<Candidate> for Ranked {
    fn as_mut(&mut self) -> &mut Candidate {
        &mut self.candidate
    }
}

impl Ranked {
    fn best_rank(&self) -> usize {
        self.vector_rank.unwrap_or(usize::MAX).min(self.keyword_rank.unwrap_or(usize::MAX))
    }
}

/// Sets each keyword hit's fusion weight from how much of the question its
/// chunk covers (`idf`: one weight per term). Hits need their payloads.
pub(super) fn weigh(terms: &[Term], idf: &[f64], keyword: &mut [Candidate]) {
    for c in keyword {
        let chunk_text = c.payload.as_ref().map_or("", |p| p.text.as_str());
        let covered = text::coverage(chunk_text, terms, idf);
        c.weight = if covered >= MIN_COVERAGE { 1.0 } else { 0.0 };
    }
}

/// What a keyword hit at this rank adds in fusion (at full weight): the
/// vector list's first place, `1/(k+1)`, for the first hit, then falling off as
/// `1/(KEYWORD_K + rank)`.
fn keyword_share(rank: usize) -> f64 {
    (1.0 + KEYWORD_K) / ((KEYWORD_K + rank as f64) * (RRF_K + 1.0))
}

/// Ranks candidates, best first.
pub(super) fn fuse(mode: Mode, vector: Vec<Candidate>, keyword: Vec<Candidate>) -> Vec<Ranked> {
    match mode {
        Mode::Vector => vector
            .into_iter()
            .enumerate()
            .map(|(i, c)| Ranked {
                score: c.vector_score.unwrap_or_default() as f64,
                candidate: c,
                vector_rank: Some(i + 1),
                keyword_rank: None,
                rerank_score: None,
            })
            .collect(),
        Mode::Keyword => keyword
            .into_iter()
            .enumerate()
            .map(|(i, c)| Ranked {
                score: c.coverage.unwrap_or_default(),
                candidate: c,
                vector_rank: None,
                keyword_rank: Some(i + 1),
                rerank_score: None,
            })
            .collect(),
        Mode::Hybrid => {
            let mut fused: HashMap<(u64, u64), Ranked> = HashMap::new();
            for (i, c) in vector.into_iter().enumerate() {
                let rank = i + 1;
                let score = 1.0 / (RRF_K + rank as f64);
                fused.insert(
                    c.key(),
                    Ranked { candidate: c, score, vector_rank: Some(rank), keyword_rank: None, rerank_score: None },
                );
            }
            for (i, c) in keyword.into_iter().enumerate() {
                let rank = i + 1;
                let add = c.weight * keyword_share(rank);
                fused
                    .entry(c.key())
                    .and_modify(|e| {
                        e.score += add;
                        e.keyword_rank = Some(rank);
                        e.candidate.bm25 = c.bm25;
                        e.candidate.coverage = c.coverage;
                        e.candidate.weight = c.weight;
                        e.candidate.matched = c.matched;
                    })
                    .or_insert(Ranked {
                        candidate: c,
                        score: add,
                        vector_rank: None,
                        keyword_rank: Some(rank),
                        rerank_score: None,
                    });
            }
            let mut out: Vec<Ranked> = fused.into_values().collect();
            out.sort_by(|a, b| {
                b.score
                    .partial_cmp(&a.score)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| a.best_rank().cmp(&b.best_rank()))
                    .then_with(|| a.candidate.chunk.cmp(&b.candidate.chunk))
            });
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(chunk: u64, v: Option<f32>, b: Option<f64>) -> Candidate {
        Candidate {
            guild: 1,
            model: "m".into(),
            chunk,
            vector_score: v,
            bm25: b,
            coverage: None,
            weight: 1.0,
            payload: None,
            matched: None,
            pieces: Vec::new(),
            near: Vec::new(),
        }
    }

    fn chunks(ranked: &[Ranked]) -> Vec<u64> {
        ranked.iter().map(|r| r.candidate.chunk).collect()
    }

    #[test]
    fn rrf_rewards_agreement_and_keeps_everything() {
        let vector = vec![cand(1, Some(0.9), None), cand(2, Some(0.8), None), cand(3, Some(0.7), None)];
        let keyword = vec![cand(3, None, Some(-9.0)), cand(4, None, Some(-5.0))];
        let out = fuse(Mode::Hybrid, vector, keyword);
        // 3 is in both lists (1/63 + 1/61) and beats 1 (1/61 alone).
        assert_eq!(chunks(&out), vec![3, 1, 2, 4]);
        assert_eq!(out[0].vector_rank, Some(3));
        assert_eq!(out[0].keyword_rank, Some(1));
        assert!((out[0].score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
        // The keyword list's first hit adds what the vector list's first does; later ones less, sooner.
        assert!((keyword_share(1) - 1.0 / 61.0).abs() < 1e-12);
        assert!(keyword_share(2) < 1.0 / 62.0 && keyword_share(5) < keyword_share(2));
        let out = fuse(Mode::Hybrid, vec![cand(1, Some(0.9), None), cand(2, Some(0.8), None)], {
            vec![cand(2, None, Some(-1.0)), cand(1, None, Some(-9.0))]
        });
        assert_eq!(chunks(&out), vec![2, 1], "first in one list and second in the other: the keyword first wins");
        // A keyword-only first hit ties with a vector-only first hit: order is deterministic.
        let out = fuse(Mode::Hybrid, vec![cand(7, Some(0.5), None)], vec![cand(5, None, Some(-1.0))]);
        assert_eq!(chunks(&out), vec![5, 7]);
        // A keyword hit that covers little of the question counts little.
        let mut weak = cand(5, None, Some(-1.0));
        weak.weight = 0.04;
        let vector: Vec<Candidate> = (10..15).map(|i| cand(i, Some(0.5), None)).collect();
        let out = fuse(Mode::Hybrid, vector, vec![weak]);
        assert_eq!(out.last().unwrap().candidate.chunk, 5);
    }

    #[test]
    fn a_chunk_both_lists_found_keeps_what_each_knows() {
        let mut v = cand(1, Some(0.9), None);
        v.near = vec![11, 12];
        let mut k = cand(1, None, Some(-2.0));
        k.matched = Some(12);
        let out = fuse(Mode::Hybrid, vec![v], vec![k]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].candidate.matched, out[0].candidate.near.as_slice()), (Some(12), &[11, 12][..]));
    }

    #[test]
    fn single_modes_keep_their_own_scores() {
        let mut hit = cand(2, None, Some(-3.5));
        hit.coverage = Some(0.75);
        let out = fuse(Mode::Keyword, vec![cand(1, Some(0.9), None)], vec![hit]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].score, 0.75);
        let out = fuse(Mode::Vector, vec![cand(1, Some(0.5), None)], vec![cand(2, None, Some(-3.5))]);
        assert_eq!((out[0].candidate.chunk, out[0].score as f32), (1, 0.5));
    }

    #[test]
    fn keyword_hits_weigh_by_how_much_of_the_question_they_cover() {
        let terms = text::terms("tokio runtime panic");
        let idf = vec![1.0; terms.len()];
        let with_text = |chunk: u64, t: &str| {
            let mut c = cand(chunk, None, Some(-1.0));
            c.payload = Some(ChunkPayload { text: t.into(), ..Default::default() });
            c
        };
        let mut hits = vec![with_text(1, "the tokio runtime will panic here"), with_text(2, "a tokio question")];
        weigh(&terms, &idf, &mut hits);
        assert!((hits[0].weight - 1.0).abs() < 1e-9, "all terms: full weight");
        assert_eq!(hits[1].weight, 0.0, "a third of the question counts for nothing");
    }
}
