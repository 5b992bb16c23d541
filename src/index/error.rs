//! What can stop a run, or a look-up of an index: [`IndexError`].

use crate::embed::ModelError;
use crate::store::StoreError;
use crate::vector::VectorError;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("guild {0} is not in the archive: load it first (`discord-indexer load --guild {0}`)")]
    UnknownGuild(u64),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Vector(#[from] VectorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the index of guild {guild} with model {model} was built with other chunking settings or prompts; rerun with --rebuild (it is built beside the current one, which answers meanwhile)"
    )]
    ChunkingChanged { guild: u64, model: String },
    #[error("the document prompt takes {tokens} of model {model}'s tokens, leaving too few for text; shorten [index] document_prompt")]
    PromptTooLong { model: String, tokens: usize },
    #[error("the index of guild {guild} with model {model} has {found}-dimensional vectors but the model now makes {wanted}; rerun with --rebuild")]
    DimensionChanged { guild: u64, model: String, found: usize, wanted: usize },
    #[error(
        "guild {guild} has no index with model {model}{}; `discord-indexer models` lists the installed models, and `discord-indexer index --guild {guild} --model NAME` builds one's index",
        if has.is_empty() { String::new() } else { format!(" (its indexes: {})", has.join(", ")) }
    )]
    NoSuchIndex { guild: u64, model: String, has: Vec<String> },
    #[error("the {model} index of guild {guild} is not complete yet: `discord-indexer index --guild {guild} --model {model}` finishes it")]
    Incomplete { guild: u64, model: String },
    #[error("interrupted; rerun to continue (nothing is lost)")]
    Interrupted,
    #[error("{0}")]
    Ocr(String),
    #[error("the vector store of guild {guild} with model {model} holds {found} points after the run, but the index records {expected}: it is damaged; rebuild it with `discord-indexer index --guild {guild} --model {model} --rebuild`")]
    Unverified { guild: u64, model: String, found: u64, expected: u64 },
}
