use super::*;

const MIN: u64 = 60_000;

/// A message at `minute` of the day (ids encode time, as snowflakes do).
fn msg(minute: u64, seq: u64, author: u64, text: &str) -> ChatMessage {
    ChatMessage {
        id: ((minute * MIN) << 22) | seq,
        channel_id: 9,
        author_id: author,
        author_name: format!("user{author}"),
        author_is_bot: false,
        content: text.into(),
        kind: 0,
        reply_to: None,
        images: Vec::new(),
    }
}

/// Counts words as tokens.
fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

fn none(_: u64) -> Option<(String, String)> {
    None
}

fn texts(chunks: &[Chunk]) -> Vec<String> {
    chunks.iter().map(|c| c.text.clone()).collect()
}

#[test]
fn long_silences_cut_chunks() {
    let ms =
        vec![msg(0, 1, 1, "hi there"), msg(3, 2, 2, "hello"), msg(30, 3, 1, "anyone around?"), msg(31, 4, 3, "yes")];
    let chunks = chunk_channel(ms, &ChunkRules::default(), &words, &none);
    assert_eq!(texts(&chunks), ["user1: hi there\nuser2: hello", "user1: anyone around?\nuser3: yes"]);
    assert_eq!(chunks[0].author_ids, vec![1, 2]);
    assert_eq!(chunks[1].message_ids.len(), 2);
}

#[test]
fn the_token_budget_cuts_chunks_and_nothing_is_truncated() {
    let rules = ChunkRules { max_tokens: 10, ..Default::default() };
    let ms: Vec<ChatMessage> = (0..6).map(|i| msg(i, i, 1, "one two three")).collect(); // 4 tokens a line
    let chunks = chunk_channel(ms, &rules, &words, &none);
    assert_eq!(chunks.len(), 3);
    assert!(chunks.iter().all(|c| c.tokens <= 10 && words(&c.text) == c.tokens));
    // A message longer than the budget becomes several chunks with all its words.
    let long = (0..25).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    let chunks =
        chunk_channel(vec![msg(0, 1, 1, "before"), msg(1, 2, 1, &long), msg(2, 3, 1, "after")], &rules, &words, &none);
    assert_eq!(chunks.len(), 5, "{:#?}", texts(&chunks));
    assert_eq!(chunks[0].text, "user1: before");
    let pieces: Vec<&Chunk> = chunks.iter().filter(|c| c.message_ids == [msg(1, 2, 1, "").id]).collect();
    assert_eq!(pieces.len(), 3);
    assert_eq!(pieces.iter().map(|c| c.piece).collect::<Vec<_>>(), [0, 1, 2]);
    let rejoined: Vec<String> = pieces.iter().map(|c| c.text.clone()).collect();
    assert_eq!(rejoined.join(" "), format!("user1: {long}"));
    assert!(pieces.iter().all(|c| c.tokens <= 10));
    let ids: std::collections::HashSet<u64> = chunks.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), chunks.len(), "chunk ids are unique");
}

#[test]
fn replies_quote_what_they_answer() {
    let mut reply = msg(1, 2, 2, "we moved key rotation to the new runbook");
    reply.kind = 19;
    reply.reply_to = Some(msg(0, 1, 1, "").id);
    let ms = vec![msg(0, 1, 1, "how do we rotate the notary keys now that vault is gone?"), reply.clone()];
    let chunks = chunk_channel(ms, &ChunkRules::default(), &words, &none);
    assert_eq!(
        chunks[0].text.lines().nth(1).unwrap(),
        "user2 (replying to user1: \"how do we rotate the notary keys now…\"): we moved key rotation to the new runbook"
    );
    // A reply to a message outside this run is quoted from the store.
    let outside = |id: u64| (id == 77).then(|| ("Carol".to_string(), "old question".to_string()));
    reply.reply_to = Some(77);
    let chunks = chunk_channel(vec![reply.clone()], &ChunkRules::default(), &words, &outside);
    assert!(chunks[0].text.starts_with("user2 (replying to Carol: \"old question\"): "));
    // A reply to a message without text (an image) names whom it answers, without an empty quote.
    let image_only = |id: u64| (id == 77).then(|| ("Carol".to_string(), "  ".to_string()));
    let chunks = chunk_channel(vec![reply], &ChunkRules::default(), &words, &image_only);
    assert!(chunks[0].text.starts_with("user2 (replying to Carol): we moved"), "{}", chunks[0].text);
}

#[test]
fn filters_leave_out_what_carries_nothing_searchable() {
    let mut bot = msg(0, 1, 5, "build #12 finished");
    bot.author_is_bot = true;
    let mut join = msg(0, 2, 6, "");
    join.kind = 7;
    let mut pinned = msg(0, 3, 6, "pinned a message");
    pinned.kind = 6;
    let ms =
        vec![bot.clone(), join, pinned, msg(0, 4, 1, "   "), msg(0, 5, 1, "!play song"), msg(0, 6, 1, "real talk")];
    let chunks = chunk_channel(ms.clone(), &ChunkRules::default(), &words, &none);
    assert_eq!(texts(&chunks), ["user1: real talk"]);
    // Filters are rules.
    let keep_bots = ChunkRules { skip_bots: false, command_prefixes: vec![], ..Default::default() };
    let chunks = chunk_channel(ms, &keep_bots, &words, &none);
    assert_eq!(texts(&chunks), ["user5: build #12 finished\nuser1: !play song\nuser1: real talk"]);
    let no_one = ChunkRules { skip_authors: vec![1], ..Default::default() };
    assert!(chunk_channel(vec![msg(0, 1, 1, "x")], &no_one, &words, &none).is_empty());
}

#[test]
fn chunking_from_any_chunk_start_reproduces_the_rest() {
    let rules = ChunkRules { max_tokens: 12, ..Default::default() };
    let mut ms: Vec<ChatMessage> =
        (0..40u64).map(|i| msg(i * 7 % 50 + i, i, i % 3, &"word ".repeat((i % 5 + 1) as usize))).collect();
    ms.sort_by_key(|m| m.id);
    let all = chunk_channel(ms.clone(), &rules, &words, &none);
    assert!(all.len() > 5);
    for c in &all {
        let from: Vec<ChatMessage> = ms.iter().filter(|m| m.id >= c.first_message_id()).cloned().collect();
        let again = chunk_channel(from, &rules, &words, &none);
        let tail: Vec<&Chunk> = all.iter().filter(|x| x.first_message_id() >= c.first_message_id()).collect();
        assert_eq!(again.iter().collect::<Vec<_>>(), tail);
    }
}

#[test]
fn ids_are_stable_and_hashes_follow_the_content() {
    let a = chunk_channel(vec![msg(0, 1, 1, "hello")], &ChunkRules::default(), &words, &none);
    let b = chunk_channel(vec![msg(0, 1, 1, "hello"), msg(1, 2, 2, "more")], &ChunkRules::default(), &words, &none);
    let c = chunk_channel(vec![msg(0, 1, 1, "hello, edited")], &ChunkRules::default(), &words, &none);
    assert_eq!(a[0].id, b[0].id, "a growing chunk keeps its id");
    assert_eq!(a[0].id, c[0].id);
    assert_ne!(a[0].hash, b[0].hash);
    assert_ne!(a[0].hash, c[0].hash);
    assert_eq!(chunk_id(1, 2, 0), chunk_id(1, 2, 0));
    assert!(chunk_id(u64::MAX, u64::MAX, 7) <= i64::MAX as u64);
}

#[test]
fn long_chunks_are_also_cut_into_parts_of_whole_lines() {
    let rules = ChunkRules { max_tokens: 40, part_tokens: 10, ..Default::default() };
    // Lines of 4 tokens ("userN: a b c"); the last one is 12 tokens, over the part budget.
    let mut ms: Vec<ChatMessage> = (0..6).map(|i| msg(i, i, i % 2 + 1, "a b c")).collect();
    ms.push(msg(6, 6, 3, "one two three four five six seven eight nine ten eleven"));
    let chunks = chunk_channel(ms.clone(), &rules, &words, &none);
    assert_eq!(chunks.len(), 1);
    let c = &chunks[0];
    let runs: Vec<usize> = c.parts.iter().map(|p| p.message_ids.len()).collect();
    assert_eq!(runs, [2, 2, 2, 1], "greedy runs of at most 10 tokens; a longer line alone");
    // Parts cover the chunk's lines in order, each line once.
    let joined: Vec<String> = c.parts.iter().map(|p| p.text.clone()).collect();
    assert_eq!(joined.join("\n"), c.text);
    let ids: Vec<u64> = c.parts.iter().flat_map(|p| p.message_ids.clone()).collect();
    assert_eq!(ids, c.message_ids);
    assert_eq!(c.parts[0].author_ids, [1, 2]);
    assert_eq!(c.parts[3].author_ids, [3]);
    // Short chunks, single lines and `part_tokens = 0` have none.
    assert!(chunk_channel(ms[..2].to_vec(), &rules, &words, &none)[0].parts.is_empty());
    assert!(chunk_channel(ms[6..].to_vec(), &rules, &words, &none)[0].parts.is_empty());
    let none_wanted = ChunkRules { part_tokens: 0, ..rules.clone() };
    assert!(chunk_channel(ms, &none_wanted, &words, &none)[0].parts.is_empty());
    // Part ids are stable, distinct from each other and from chunk ids.
    assert_eq!(part_id(c.id, 1), part_id(c.id, 1));
    assert_ne!(part_id(c.id, 0), part_id(c.id, 1));
    assert_ne!(part_id(c.id, 0), c.id);
}

#[test]
fn a_titled_channel_leads_every_chunk_with_its_title() {
    let rules = ChunkRules { max_tokens: 12, ..Default::default() };
    let ms: Vec<ChatMessage> = (0..6).map(|i| msg(i, i, 1, "one two three")).collect(); // 4 tokens a line
    let count = |s: &str| words(s);
    let titled = |from: usize| {
        let mut c = Chunker::new(&rules, &count, &none).titled(Some("Install  fails\non ARM"));
        let mut out: Vec<Chunk> = ms[from..].iter().flat_map(|m| c.push(m.clone())).collect();
        out.extend(c.finish());
        out
    };
    let chunks = titled(0);
    assert!(chunks.len() > 1);
    for c in &chunks {
        assert!(c.text.starts_with("[Install fails on ARM] user1: one two three"), "{}", c.text);
        assert_eq!(c.text.lines().count(), c.message_ids.len(), "still one line per message");
        assert!(c.tokens <= 12 && c.tokens == words(&c.text));
    }
    // Deterministic from any chunk start, title included.
    let second = ms.iter().position(|m| m.id == chunks[1].first_message_id()).unwrap();
    assert_eq!(titled(second), chunks[1..]);
    // A title that would not fit is left out rather than overflow the budget.
    let mut c = Chunker::new(&rules, &count, &none).titled(Some("a very long title of many many many words here"));
    let mut out: Vec<Chunk> = ms.iter().flat_map(|m| c.push(m.clone())).collect();
    out.extend(c.finish());
    assert!(out.iter().all(|c| c.tokens <= 12 && !c.text.contains("title")));
}

fn image(name: &str, description: Option<&str>, text: &str) -> ImageNote {
    ImageNote { filename: name.into(), description: description.map(Into::into), text: text.into() }
}

#[test]
fn image_text_joins_its_message_line() {
    let mut with_text = msg(0, 1, 1, "this fails on start");
    with_text.images = vec![image("error.png", None, "Error: ERR_NOTARY_KEY_EXPIRED\nat block 1234")];
    let mut image_only = msg(1, 2, 2, "");
    image_only.images = vec![image("board.jpg", Some("the whiteboard"), "")];
    let mut photo_only = msg(2, 3, 3, "");
    photo_only.images = vec![image("IMG_2034.jpg", None, "")];
    let mut photo_with_words = msg(3, 4, 1, "our new office");
    photo_with_words.images = vec![image("IMG_2035.jpg", None, "")];
    let chunks =
        chunk_channel(vec![with_text, image_only, photo_only, photo_with_words], &ChunkRules::default(), &words, &none);
    assert_eq!(
        texts(&chunks),
        vec![
            "user1: this fails on start [image error.png: \"Error: ERR_NOTARY_KEY_EXPIRED at block 1234\"]\n\
             user2: [image board.jpg (the whiteboard)]\n\
             user1: our new office [image IMG_2035.jpg]"
        ],
        "a photo that says nothing, alone, is no line"
    );
}

#[test]
fn long_image_text_is_cut_on_the_line() {
    let mut m = msg(0, 1, 1, "log");
    m.images = vec![image("log.png", None, &"word ".repeat(400))];
    let rules = ChunkRules { max_tokens: 1000, ..ChunkRules::default() };
    let chunks = chunk_channel(vec![m], &rules, &words, &none);
    assert!(chunks[0].text.ends_with("…\"]"), "{}", chunks[0].text);
    assert!(chunks[0].text.len() < IMAGE_TEXT_CHARS + 60);
}
