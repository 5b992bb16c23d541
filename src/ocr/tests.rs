//! Tests that run Tesseract on the images in `tests/fixtures/images/`.
//!
//! They fail when Tesseract cannot be loaded, so that a machine without it
//! does not pass them silently; `DISCORD_INDEXER_SKIP_OCR=1` turns them into
//! skips (printing "SKIPPED").

use std::time::Instant;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/images/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An engine, or `None` (test skipped) when Tesseract is missing and
/// `DISCORD_INDEXER_SKIP_OCR=1`; panics when it is missing otherwise.
fn engine() -> Option<Engine> {
    match Engine::load() {
        Ok(engine) => Some(engine),
        Err(e) if std::env::var("DISCORD_INDEXER_SKIP_OCR").as_deref() == Ok("1") => {
            println!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("{e}\n(set DISCORD_INDEXER_SKIP_OCR=1 to skip the OCR tests)"),
    }
}

fn read(engine: &mut Engine, name: &str) -> Recognized {
    let r = engine.recognize(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("{name}: {} words, confidence {:.1}: {:?}", r.words, r.confidence, r.text);
    r
}

/// The words of `text` with at least three letters.
fn long_words(text: &str) -> Vec<&str> {
    text.split_whitespace().filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 3).collect()
}

#[test]
fn reads_an_error_message_exactly() {
    let Some(mut engine) = engine() else { return };
    let r = read(&mut engine, "error.png");
    assert_eq!(r.text, "Error: ERR_NOTARY_KEY_EXPIRED at block 1234");
    assert_eq!(r.words, 5);
    assert!(r.confidence > 80.0, "{}", r.confidence);
}

#[test]
fn reads_two_lines_of_jpeg() {
    let Some(mut engine) = engine() else { return };
    let r = read(&mut engine, "two_lines.jpg");
    assert_eq!(r.text, "The quarterly report is due Friday\nSend comments to the release channel");
}

#[test]
fn reads_dark_theme_text() {
    let Some(mut engine) = engine() else { return };
    let r = read(&mut engine, "dark_mode.png");
    assert_eq!(r.text, "deploy failed: connection refused on port 5432\nretrying in 30 seconds");
}

#[test]
fn reads_a_small_single_line() {
    let Some(mut engine) = engine() else { return };
    let r = read(&mut engine, "small.png");
    assert_eq!(r.text, "Invoice 4471 overdue since March");
}

#[test]
fn reads_a_chat_screenshot_column_by_column() {
    let Some(mut engine) = engine() else { return };
    let r = read(&mut engine, "screenshot.png");
    for line in [
        "the nightly build is green again",
        "great, tagging version 2.8.1 now",
        "release notes are in the wiki",
        "# build-logs",
    ] {
        assert!(r.text.lines().any(|l| l == line), "{line:?} not a line of {:?}", r.text);
    }
    // The sidebar is read before the messages, not interleaved with them.
    let sidebar = r.text.find("off-topic").unwrap();
    let first_message = r.text.find("the nightly build").unwrap();
    assert!(sidebar < first_message, "{:?}", r.text);
    // The avatars are not read as text.
    assert!(!r.text.contains('@'), "{:?}", r.text);
}

#[test]
fn a_photo_without_text_gives_no_words() {
    let Some(mut engine) = engine() else { return };
    let r = read(&mut engine, "photo.jpg");
    assert!(long_words(&r.text).is_empty(), "{:?}", r.text);
}

#[test]
fn what_tesseract_invents_in_a_picture_is_dropped() {
    let Some(mut engine) = engine() else { return };
    let raw = engine.words(&fixture("board.jpg")).unwrap();
    println!("board.jpg as read: {raw:?}");
    let r = read(&mut engine, "board.jpg");
    assert_eq!(r, Recognized { text: String::new(), confidence: 0.0, words: 0 });
}

#[test]
fn a_caption_over_a_photo_keeps_the_caption_only() {
    let Some(mut engine) = engine() else { return };
    let r = read(&mut engine, "meme.jpg");
    assert!(r.text.ends_with("FINALLY PASSES"), "{:?}", r.text);
    let caption = ["WHEN", "THE", "BUILD", "FINALLY", "PASSES"];
    for word in r.text.split_whitespace() {
        assert!(caption.contains(&word), "{word:?} is not in the caption: {:?}", r.text);
    }
}

#[test]
fn a_truncated_png_is_undecodable() {
    let Some(mut engine) = engine() else { return };
    let e = engine.recognize(&fixture("truncated.png")).unwrap_err();
    assert!(matches!(e, Refused::Undecodable(_)), "{e:?}");
    assert_eq!(e.to_string(), "image could not be decoded: png data is truncated");

    // And a JPEG cut in the middle.
    let jpeg = fixture("two_lines.jpg");
    let e = engine.recognize(&jpeg[..jpeg.len() / 2]).unwrap_err();
    assert_eq!(e.to_string(), "image could not be decoded: jpeg data is truncated");
}

#[test]
fn a_jpeg_cut_after_its_thumbnail_is_truncated() {
    // Runs everywhere: the refusal happens before Tesseract is needed.
    // An EXIF thumbnail is a whole JPEG, end marker included, inside the
    // picture's APP1 segment: the end of the thumbnail is not the end of the
    // picture.
    let jpeg = fixture("two_lines.jpg");
    let mut exif = jpeg[..2].to_vec();
    let thumbnail = [b"Exif\0\0".as_slice(), &[0xFF, 0xD8, 0xFF, 0xDB, 0, 2, 0xFF, 0xD9]].concat();
    exif.extend_from_slice(&[0xFF, 0xE1]);
    exif.extend_from_slice(&((thumbnail.len() + 2) as u16).to_be_bytes());
    exif.extend_from_slice(&thumbnail);
    exif.extend_from_slice(&jpeg[2..]);
    assert!(admit(&exif).is_ok());
    let e = admit(&exif[..exif.len() / 2]).unwrap_err();
    assert_eq!(e.to_string(), "image could not be decoded: jpeg data is truncated");
    // A motion photo (a JPEG, then a video) is a complete JPEG.
    let mut motion = jpeg.clone();
    motion.extend_from_slice(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom\0\0\0\x10mdat\x01\x02\x03\x04\x05\x06\x07\x08");
    assert!(admit(&motion).is_ok());
}

#[test]
fn bytes_after_the_end_marker_do_not_change_what_is_read() {
    let Some(mut engine) = engine() else { return };
    let mut png = fixture("error.png");
    png.extend_from_slice(b"appended by some uploader");
    assert_eq!(engine.recognize(&png).unwrap().text, "Error: ERR_NOTARY_KEY_EXPIRED at block 1234");
    let mut motion = fixture("two_lines.jpg");
    motion.extend_from_slice(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom\0\0\0\x10mdat\xFF\xD8\xFF\xE0\x05\x06\x07\x08");
    let r = engine.recognize(&motion).unwrap();
    assert_eq!(r.text, "The quarterly report is due Friday\nSend comments to the release channel");
}

#[test]
fn a_corrupt_png_is_undecodable() {
    let Some(mut engine) = engine() else { return };
    // Complete structure, garbage inside: the decoder has to find out.
    let mut png = fixture("error.png");
    let middle = png.len() / 2;
    for b in &mut png[middle..middle + 64] {
        *b = !*b;
    }
    let e = engine.recognize(&png).unwrap_err();
    assert!(matches!(e, Refused::Undecodable(_)), "{e:?}");
}

#[test]
fn a_text_file_named_png_is_not_an_image() {
    let Some(mut engine) = engine() else { return };
    assert_eq!(engine.recognize(&fixture("not_an_image.png")), Err(Refused::NotAnImage));
    assert_eq!(engine.recognize(b""), Err(Refused::NotAnImage));
}

/// A PNG chunk: length, type, data, CRC-32 of type and data.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut covered = kind.to_vec();
    covered.extend_from_slice(data);
    out.extend_from_slice(&crc32(&covered).to_be_bytes());
    out
}

/// A PNG that declares `width`x`height` pixels, 8-bit RGB, and holds a few
/// bytes of (invalid) image data: enough for a decoder to start allocating.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00]));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

#[test]
fn the_crc_is_right() {
    // IEND's CRC is a constant of the PNG format.
    assert_eq!(png_chunk(b"IEND", &[])[8..], [0xAE, 0x42, 0x60, 0x82]);
}

#[test]
fn oversized_images_are_refused_before_decoding() {
    let Some(mut engine) = engine() else { return };
    let bomb = png_declaring(60_000, 60_000);
    let sniffed = sniff(&bomb).unwrap();
    assert_eq!((sniffed.width, sniffed.height), (60_000, 60_000));

    let started = Instant::now();
    assert_eq!(engine.recognize(&bomb), Err(Refused::TooLarge { width: 60_000, height: 60_000 }));
    // 3.6 Gpx would take seconds and gigabytes to even allocate.
    assert!(started.elapsed().as_millis() < 100, "{:?}", started.elapsed());

    // Over the per-side cap with few pixels, and over the pixel cap with
    // sides under theirs.
    assert!(matches!(engine.recognize(&png_declaring(MAX_SIDE + 1, 10)), Err(Refused::TooLarge { .. })));
    assert!(matches!(engine.recognize(&png_declaring(8_000, 8_000)), Err(Refused::TooLarge { .. })));
    // Just under the caps the image is decoded, and this one's data is junk.
    assert!(matches!(engine.recognize(&png_declaring(20, 20)), Err(Refused::Undecodable(_))));
}

/// A GIF89a: a logical screen of `screen` pixels with a two-colour table,
/// then one image per (left, top, width, height), each after a graphic
/// control extension and with the few bytes of LZW data of a 1x1 image.
pub(crate) fn gif(screen: (u16, u16), frames: &[(u16, u16, u16, u16)]) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&screen.0.to_le_bytes());
    out.extend_from_slice(&screen.1.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
    for &(left, top, width, height) in frames {
        out.extend_from_slice(&[0x21, 0xF9, 4, 0, 0, 0, 0, 0]);
        out.push(0x2C);
        for v in [left, top, width, height] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[0, 2, 2, 0x44, 0x01, 0]);
    }
    out.push(0x3B);
    out
}

/// A little-endian TIFF with one directory of these (tag, type, value)
/// entries (type 3 SHORT or 4 LONG, one value each), then `pages - 1` more
/// directories of 1x1 pixel, and eight bytes of pixel data.
pub(crate) fn tiff(entries: &[(u16, u16, u32)], pages: usize) -> Vec<u8> {
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    let dirs: Vec<Vec<(u16, u16, u32)>> = std::iter::once(entries.to_vec())
        .chain((1..pages).map(|_| vec![(256, 3, 1), (257, 3, 1), (258, 3, 8), (273, 4, 0), (279, 4, 1)]))
        .collect();
    for (i, dir) in dirs.iter().enumerate() {
        out.extend_from_slice(&(dir.len() as u16).to_le_bytes());
        let next = out.len() + 12 * dir.len() + 4;
        for &(tag, kind, value) in dir {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            match kind {
                3 => out.extend_from_slice(&[(value as u16).to_le_bytes(), [0, 0]].concat()),
                _ => out.extend_from_slice(&value.to_le_bytes()),
            }
        }
        let next = if i + 1 < dirs.len() { next as u32 } else { 0 };
        out.extend_from_slice(&next.to_le_bytes());
    }
    out.extend_from_slice(&[0; 8]);
    out
}

/// A baseline TIFF directory of `width`x`height` 8-bit grey pixels.
pub(crate) fn tiff_entries(width: u32, height: u32) -> Vec<(u16, u16, u32)> {
    vec![(256, 4, width), (257, 4, height), (258, 3, 8), (262, 3, 1), (273, 4, 8), (279, 4, 8)]
}

#[test]
fn frames_past_the_caps_are_refused_before_decoding() {
    // Runs everywhere: these refusals happen before Tesseract is needed.
    // A GIF's header gives its logical screen; giflib (through Leptonica)
    // allocates each frame at its own size, and keeps every frame.
    let bomb = gif((200, 60), &[(0, 0, 40_000, 40_000)]);
    assert_eq!((sniff(&bomb).unwrap().width, sniff(&bomb).unwrap().height), (200, 60));
    assert_eq!(admit(&bomb), Err(Refused::TooLarge { width: 40_000, height: 40_000 }));
    let second = gif((200, 60), &[(0, 0, 200, 60), (0, 0, 20_000, 20_000)]);
    assert_eq!(admit(&second), Err(Refused::TooLarge { width: 20_000, height: 20_000 }));
    // A frame within the caps but past its screen: a decoder would allocate
    // more than the header says.
    let past = gif((200, 60), &[(0, 0, 200, 60), (150, 0, 100, 60)]);
    assert!(matches!(admit(&past), Err(Refused::Undecodable(_))), "{:?}", admit(&past));
    // Many small frames are all held at once.
    let many = gif((4_000, 4_000), &[(0, 0, 4_000, 4_000); 11]);
    assert!(matches!(admit(&many), Err(Refused::TooManyFrames { frames: 11, .. })), "{:?}", admit(&many));
    assert_eq!(admit(&gif((200, 60), &[(0, 0, 200, 60), (10, 10, 20, 20)])).map(|s| s.format), Ok(ImageFormat::Gif));

    // A TIFF whose directory names its width twice: the header reader takes
    // the first pair it sees, libtiff the last value.
    let mut twice = tiff_entries(200, 60);
    twice.push((256, 4, 40_000));
    let two_widths = tiff(&twice, 1);
    assert_eq!(sniff(&two_widths).unwrap().width, 200);
    assert_eq!(admit(&two_widths), Err(Refused::TooLarge { width: 40_000, height: 60 }));
    // Twice, within the caps: which one a decoder uses cannot be told.
    let mut twice = tiff_entries(200, 60);
    twice.push((257, 3, 70));
    assert!(matches!(admit(&tiff(&twice, 1)), Err(Refused::Undecodable(_))));
    // A later page over the caps.
    let mut pages = tiff(&tiff_entries(200, 60), 2);
    let second_width = pages.len() - 8 - 4 - 5 * 12 + 8;
    pages[second_width..second_width + 2].copy_from_slice(&30_000u16.to_le_bytes());
    assert_eq!(admit(&pages), Err(Refused::TooLarge { width: 30_000, height: 1 }));
    assert_eq!(admit(&tiff(&tiff_entries(200, 60), 3)).map(|s| s.format), Ok(ImageFormat::Tiff));

    // A JPEG whose second frame header declares more than the first.
    let jpeg = fixture("two_lines.jpg");
    let mut two_frames = jpeg[..2].to_vec();
    two_frames.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0, 10, 0, 10, 1, 1, 0x11, 0]);
    two_frames.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0x9C, 0x40, 0x9C, 0x40, 1, 1, 0x11, 0]);
    two_frames.extend_from_slice(&jpeg[2..]);
    assert_eq!(admit(&two_frames), Err(Refused::TooLarge { width: 40_000, height: 40_000 }));

    // A PNG with a second header after the first.
    let mut png = png_declaring(20, 20);
    let mut ihdr = 40_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&40_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.splice(33..33, png_chunk(b"IHDR", &ihdr));
    assert_eq!(admit(&png), Err(Refused::TooLarge { width: 40_000, height: 40_000 }));
}

#[test]
fn a_gif_bomb_is_refused_by_the_engine_without_decoding() {
    let Some(mut engine) = engine() else { return };
    let started = Instant::now();
    let bomb = gif((200, 60), &[(0, 0, 40_000, 40_000)]);
    assert_eq!(engine.recognize(&bomb), Err(Refused::TooLarge { width: 40_000, height: 40_000 }));
    assert!(started.elapsed().as_millis() < 100, "{:?}", started.elapsed());
    // The engine still reads.
    read(&mut engine, "error.png");
}

/// An ISO-BMFF box: size, type, contents.
fn bmff_box(kind: &[u8; 4], contents: &[u8]) -> Vec<u8> {
    let mut out = ((contents.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(contents);
    out
}

#[test]
fn formats_not_decoded_here_are_refused_as_such() {
    let Some(mut engine) = engine() else { return };
    // The start of an AVIF file: ftyp, then meta > iprp > ipco > ispe (the
    // image's size, 640x480).
    let mut avif = bmff_box(b"ftyp", b"avif\0\0\0\0avifmif1miaf");
    let mut ispe = vec![0, 0, 0, 0];
    ispe.extend_from_slice(&640u32.to_be_bytes());
    ispe.extend_from_slice(&480u32.to_be_bytes());
    let mut meta = vec![0, 0, 0, 0];
    meta.extend(bmff_box(b"iprp", &bmff_box(b"ipco", &bmff_box(b"ispe", &ispe))));
    avif.extend(bmff_box(b"meta", &meta));

    let sniffed = sniff(&avif).unwrap();
    assert_eq!(sniffed, Sniffed { format: ImageFormat::Avif, mime: "image/avif", width: 640, height: 480 });
    let e = engine.recognize(&avif).unwrap_err();
    assert_eq!(e, Refused::Unsupported(ImageFormat::Avif));
    assert_eq!(e.to_string(), "avif images are not decoded for OCR");
}

#[test]
fn tiny_images_do_not_break_the_engine() {
    let Some(mut engine) = engine() else { return };
    let r = engine.recognize(&fixture("tiny.png"));
    assert!(matches!(&r, Ok(r) if r.text.is_empty()) || matches!(r, Err(Refused::Undecodable(_))), "{r:?}");
    read(&mut engine, "error.png");
}

#[test]
fn missing_language_data_is_reported_with_what_to_install() {
    let Some(engine) = engine() else { return };
    let e = engine.library().engine_with(Some("/nonexistent/tessdata".to_string())).unwrap_err();
    assert!(matches!(e, Unavailable::LanguageData { language: "eng", .. }), "{e:?}");
    let message = e.to_string();
    println!("{message}");
    assert!(message.contains("TESSDATA_PREFIX=/nonexistent/tessdata"), "{message}");
    assert!(message.contains("tesseract-ocr-eng"), "{message}");
}

#[test]
fn a_missing_library_is_reported_with_what_to_install() {
    // Runs everywhere: it needs no Tesseract.
    let e = ffi::Api::load_from(&["libtesseract-not-here.so.99"], &[]).map(|_| ()).unwrap_err();
    assert!(matches!(e, Unavailable::Tesseract { .. }), "{e:?}");
    let message = e.to_string();
    println!("{message}");
    assert!(message.contains("libtesseract-not-here.so.99"), "{message}");
    assert!(message.contains("apt-get install tesseract-ocr tesseract-ocr-eng"), "{message}");
}

#[test]
fn version_names_engine_language_and_revision_and_is_stable() {
    let Some(a) = engine() else { return };
    let b = a.another().unwrap();
    let c = Engine::load().unwrap();
    println!("version: {}", a.version());
    assert!(a.version().starts_with("tesseract "), "{}", a.version());
    assert!(a.version().contains(" eng"), "{}", a.version());
    assert!(a.version().ends_with(&format!(" r{PROCESSING_REVISION}")), "{}", a.version());
    assert!(a.version().contains(&a.library().library_version()));
    assert_eq!(a.version(), b.version());
    assert_eq!(a.version(), c.version());
}

#[test]
fn one_engine_reads_many_images_the_same_way() {
    let Some(mut engine) = engine() else { return };
    let names = ["error.png", "two_lines.jpg", "photo.jpg", "dark_mode.png", "truncated.png"];
    let first: Vec<_> = names.iter().map(|n| engine.recognize(&fixture(n))).collect();
    for _ in 0..3 {
        for (name, expected) in names.iter().zip(&first) {
            assert_eq!(&engine.recognize(&fixture(name)), expected, "{name}");
        }
    }
}

#[test]
fn engines_on_other_threads_share_the_libraries() {
    fn is_send<T: Send>() {}
    is_send::<Engine>();
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Tesseract>();

    let Some(engine) = engine() else { return };
    let expected = "Error: ERR_NOTARY_KEY_EXPIRED at block 1234";
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let lib = engine.library().clone();
            std::thread::spawn(move || {
                let mut mine = lib.engine().unwrap();
                (0..3).map(|_| mine.recognize(&fixture("error.png")).unwrap().text).collect::<Vec<_>>()
            })
        })
        .collect();
    // And an engine moved to another thread.
    let moved = std::thread::spawn(move || {
        let mut engine = engine;
        engine.recognize(&fixture("error.png")).unwrap().text
    });
    for t in threads {
        for text in t.join().unwrap() {
            assert_eq!(text, expected);
        }
    }
    assert_eq!(moved.join().unwrap(), expected);
}

/// Every word Tesseract reads in each fixture, with its confidence ("|"
/// where a line starts), and what the confidence rule keeps:
/// `cargo test --lib ocr::tests::word_confidences -- --ignored --nocapture`
#[test]
#[ignore]
fn word_confidences() {
    let Some(mut engine) = engine() else { return };
    for name in [
        "error.png",
        "two_lines.jpg",
        "dark_mode.png",
        "small.png",
        "screenshot.png",
        "photo.jpg",
        "board.jpg",
        "meme.jpg",
    ] {
        let words = engine.words(&fixture(name)).unwrap();
        let read: Vec<String> = words
            .iter()
            .map(|w| format!("{}{}({:.0})", if w.starts_line { "| " } else { "" }, w.text, w.confidence))
            .collect();
        println!("{name}: {}\n  => {:?}", read.join(" "), text::assemble(words));
    }
}

/// Images per second on one thread for error.png (602x58):
/// `cargo test --release --lib ocr::tests::rate -- --ignored --nocapture`
#[test]
#[ignore]
fn rate() {
    let Some(mut engine) = engine() else { return };
    for name in ["error.png", "small.png", "screenshot.png", "board.jpg"] {
        let bytes = fixture(name);
        engine.recognize(&bytes).unwrap();
        let n = 30;
        let started = Instant::now();
        for _ in 0..n {
            engine.recognize(&bytes).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!("{name}: {:.1} images/s ({:.1} ms each)", n as f64 / secs, 1000.0 * secs / n as f64);
    }
    let started = Instant::now();
    let _another = engine.another().unwrap();
    println!("new engine: {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
}
