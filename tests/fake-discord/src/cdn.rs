//! The fake CDN: the files behind attachments, and the signed, expiring links
//! to them.
//!
//! Every attachment's file follows from its id alone ([`attachment_file`],
//! [`file_bytes`]). Most are screenshots of error messages (black text on
//! white, rendered from the bundled DejaVu Sans, holding a word unique to the
//! attachment: [`unique_word`]); some are photos without text; the rest are
//! the files a fetcher must survive: PNGs cut short, text files named `.png`,
//! files over 9 MiB, and PNGs whose header claims 60000×60000 pixels.
//!
//! Message pages carry each file's size, so sizes are known without
//! rendering: a rendered screenshot or photo is padded with a private
//! ancillary chunk (`paDd`, which decoders skip) to the size its pixels
//! would take uncompressed, and the oversize file is stored uncompressed.
//!
//! Links look like Discord's, with unix seconds in lowercase hex:
//! `{base}/attachments/{channel}/{attachment}/{filename}?ex={expiry}&is={issued}&hm={signature}`.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};

use crate::world::World;

/// DejaVu Sans (Bitstream Vera licence, see `assets/LICENSE-DejaVu.txt`).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// What an attachment's file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeKind {
    /// A screenshot of this text (lines separated by `\n`), which OCR should
    /// read exactly. It holds the attachment's [`unique_word`].
    Text(String),
    /// A photo-like picture (gradients, blobs, a little noise) without text.
    Photo,
    /// A PNG signature and header, then pixel data cut short.
    Broken,
    /// A log excerpt (plain text) named `image-N.png` and typed `image/png`.
    NotImage,
    /// A valid PNG of more than 9 MiB (uncompressed pixels).
    Oversize,
    /// A small PNG whose header claims 60000×60000 RGBA pixels.
    Bomb,
}

impl FakeKind {
    pub fn name(&self) -> &'static str {
        match self {
            FakeKind::Text(_) => "text",
            FakeKind::Photo => "photo",
            FakeKind::Broken => "broken",
            FakeKind::NotImage => "not-image",
            FakeKind::Oversize => "oversize",
            FakeKind::Bomb => "bomb",
        }
    }
}

/// An attachment's file, as Discord describes it and the CDN serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeFile {
    pub kind: FakeKind,
    pub filename: String,
    /// The type Discord states (from the upload's name: it lies for `NotImage`).
    pub content_type: &'static str,
    /// The exact length of the bytes the CDN serves.
    pub declared_size: u64,
    /// Pixels, as the PNG header says (`None` for `NotImage`).
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Alt text, set on about half of the screenshots and photos.
    pub description: Option<String>,
}

/// One attachment of a world's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeAttachment {
    pub guild_id: u64,
    pub channel_id: u64,
    pub message_id: u64,
    pub attachment_id: u64,
    pub file: FakeFile,
}

/// The size of the file at which a fetcher should stop: oversize files are bigger.
pub const OVERSIZE_BYTES: u64 = 9 * 1024 * 1024;
/// What a bomb's header claims.
pub const BOMB_PIXELS: u32 = 60_000;

const MIME_PNG: &str = "image/png";
const TEXT_PX: f32 = 32.0;
const MARGIN: u32 = 20;
/// Issue time of the links in worlds no server serves (2023-11-14): long expired.
const UNSERVED_EPOCH: i64 = 1_700_000_000;
pub(crate) const DAY: i64 = 86_400;

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small deterministic generator for what a file holds.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(mix(seed))
    }

    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

fn kind_roll(attachment_id: u64) -> u64 {
    mix(attachment_id ^ 0x00C0_FFEE) % 100
}

/// A word made for this attachment, unique among a world's attachments:
/// what a test searches for after OCR. Capitals, then the id's low 22 bits
/// plus 1000 in decimal ("KUBVES3598698"). Tesseract reads made-up words
/// exactly but is unsure of them; capitals and digits, as error codes are
/// written, it is surest of (confidence 74..93 over 400 screenshots, against
/// 45..93 in lower case). No I, L or O (read as digits), and no leading 0.
pub fn unique_word(attachment_id: u64) -> String {
    const SYLLABLES: [&str; 16] = [
        "ZAN", "THAR", "VES", "KUB", "DRAM", "PEX", "MUR", "TAV", "GEN", "BRAX", "SUN", "REK", "WAM", "FEN", "DUX",
        "HAP",
    ];
    let h = mix(attachment_id ^ 0x7E57);
    let (first, second) = (SYLLABLES[(h & 15) as usize], SYLLABLES[((h >> 4) & 15) as usize]);
    format!("{first}{second}{}", 1000 + (attachment_id & 0x3F_FFFF))
}

/// What the attachment with this id is (its kind, name, type, size and
/// pixels), without rendering it.
pub fn attachment_file(attachment_id: u64) -> FakeFile {
    let mut rng = Rng::new(attachment_id ^ 0xF11E);
    let n = 1000 + rng.below(9000);
    let roll = kind_roll(attachment_id);
    let alt = rng.below(2) == 0;
    let mut file = FakeFile {
        kind: FakeKind::Photo,
        filename: format!("screenshot-{n}.png"),
        content_type: MIME_PNG,
        declared_size: 0,
        width: None,
        height: None,
        description: None,
    };
    match roll {
        0..60 => {
            let text = screenshot_text(attachment_id);
            let (w, h) = text_dims(attachment_id, &text);
            file.declared_size = padded_size(w, h, 1, attachment_id);
            (file.width, file.height) = (Some(w), Some(h));
            file.description = alt.then(|| rng.pick(SCREENSHOT_ALTS).to_string());
            file.kind = FakeKind::Text(text);
        }
        60..75 => {
            let (w, h) = photo_dims(attachment_id);
            file.filename = format!("photo-{n}.png");
            file.declared_size = padded_size(w, h, 3, attachment_id);
            (file.width, file.height) = (Some(w), Some(h));
            file.description = alt.then(|| rng.pick(PHOTO_ALTS).to_string());
        }
        75..83 => {
            file.kind = FakeKind::Broken;
            file.declared_size = broken_bytes(attachment_id).len() as u64;
            (file.width, file.height) = (Some(BROKEN_DIMS.0), Some(BROKEN_DIMS.1));
        }
        83..89 => {
            file.kind = FakeKind::NotImage;
            file.filename = format!("image-{n}.png");
            file.declared_size = log_excerpt(attachment_id).len() as u64;
        }
        89..95 => {
            let (w, h) = oversize_dims(attachment_id);
            file.kind = FakeKind::Oversize;
            file.filename = format!("scan-{n}.png");
            file.declared_size = stored_png_size(w, h, 3);
            (file.width, file.height) = (Some(w), Some(h));
        }
        _ => {
            file.kind = FakeKind::Bomb;
            file.declared_size = bomb_bytes().len() as u64;
            (file.width, file.height) = (Some(BOMB_PIXELS), Some(BOMB_PIXELS));
        }
    }
    file
}

/// The bytes the CDN serves for this attachment (rendered now; deterministic).
pub fn file_bytes(attachment_id: u64) -> Vec<u8> {
    let file = attachment_file(attachment_id);
    match core_png(attachment_id, &file) {
        Some(core) => pad_png(&core, file.declared_size),
        None => uncached_bytes(attachment_id, &file),
    }
}

/// Rendered screenshots and photos (their compressed PNGs before padding:
/// about 15 KB a screenshot, 500 KB a photo), kept by the server up to
/// [`FileCache::LIMIT`] bytes.
#[derive(Default)]
pub(crate) struct FileCache(Mutex<Cached>);

/// Compressed PNGs by attachment id, and their bytes in all.
type Cached = (HashMap<u64, Arc<Vec<u8>>>, usize);

impl FileCache {
    /// Like [`file_bytes`], rendering each screenshot and photo once.
    pub(crate) fn bytes(&self, attachment_id: u64, file: &FakeFile) -> Vec<u8> {
        if !matches!(file.kind, FakeKind::Text(_) | FakeKind::Photo) {
            return uncached_bytes(attachment_id, file);
        }
        let cached = self.0.lock().unwrap().0.get(&attachment_id).cloned();
        let core = match cached {
            Some(core) => core,
            None => {
                let core = Arc::new(core_png(attachment_id, file).expect("screenshots and photos render"));
                let mut cache = self.0.lock().unwrap();
                let (files, bytes) = &mut *cache;
                if *bytes + core.len() > Self::LIMIT {
                    // A whole world's files (a benchmark's) do not stay: start over.
                    files.clear();
                    *bytes = 0;
                }
                if files.insert(attachment_id, core.clone()).is_none() {
                    *bytes += core.len();
                }
                core
            }
        };
        pad_png(&core, file.declared_size)
    }

    const LIMIT: usize = 64 << 20;
}

fn uncached_bytes(attachment_id: u64, file: &FakeFile) -> Vec<u8> {
    match file.kind {
        FakeKind::Broken => broken_bytes(attachment_id),
        FakeKind::NotImage => log_excerpt(attachment_id).into_bytes(),
        FakeKind::Oversize => {
            let (w, h) = oversize_dims(attachment_id);
            stored_png(w, h, 3, &oversize_pixels(attachment_id, w, h))
        }
        FakeKind::Bomb => bomb_bytes().to_vec(),
        FakeKind::Text(_) | FakeKind::Photo => file_bytes(attachment_id),
    }
}

/// The compressed PNG of a screenshot or photo, before padding.
fn core_png(attachment_id: u64, file: &FakeFile) -> Option<Vec<u8>> {
    match &file.kind {
        FakeKind::Text(text) => {
            let (w, h) = text_dims(attachment_id, text);
            Some(encode_png(w, h, png::ColorType::Grayscale, &render_text(text, w, h)))
        }
        FakeKind::Photo => {
            let (w, h) = photo_dims(attachment_id);
            Some(encode_png(w, h, png::ColorType::Rgb, &render_photo(attachment_id, w, h)))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- screenshots

const SCREENSHOT_ALTS: &[&str] = &[
    "screenshot of the deploy error",
    "the error I get on startup",
    "CI log screenshot",
    "stack trace from the relay",
    "what the console shows",
    "error dialog after the upgrade",
];
const PHOTO_ALTS: &[&str] = &[
    "photo of the whiteboard",
    "the rack in the server room",
    "my desk setup",
    "sunset from the office roof",
    "the team lunch",
];

const HEADERS: &[&str] = &[
    "Error: {code} at block {num}",
    "panic: quorum lost on node-{digit} (exit code {status})",
    "FATAL relay timeout after {secs}s",
    "ERROR {svc} failed health check",
    "WARN disk usage at {pct}% on {host}",
    "connection refused: {host}:{port}",
    "Segmentation fault (core dumped)",
    "error: could not compile {svc}",
    "Unhandled exception in {svc} worker",
    "HTTP 503 from {host} after {secs}s",
];
const TOKEN_LINES: &[&str] =
    &["trace id {t}", "request {t} failed", "see incident {t}", "job {t} exited with status {status}", "ref {t}"];
const DETAILS: &[&str] = &[
    "retrying in {secs} seconds",
    "at deploy/{stage}.yaml line {line}",
    "please page the on-call engineer",
    "build {num} aborted",
    "rollback started on {host}",
    "last good version was v{digit}.{line}.{digit}",
];
const CODES: &[&str] = &[
    "ERR_NOTARY_KEY_EXPIRED",
    "ERR_LEADER_LOST",
    "ERR_RELAY_TIMEOUT",
    "ERR_CERT_REVOKED",
    "ERR_DISK_FULL",
    "ERR_SCHEMA_MISMATCH",
    "ERR_TOKEN_INVALID",
    "ERR_POOL_EXHAUSTED",
];
const SERVICES: &[&str] = &["relay-gateway", "notary", "billing-api", "ledger-sync", "auth-proxy", "indexer"];
const HOSTS: &[&str] = &["db-primary", "cache-02", "edge-eu-1", "build-runner-7", "vault-3"];
const STAGES: &[&str] = &["staging", "canary", "production", "preview"];

/// A template with its `{placeholders}` filled, left to right (`{t}`: the unique word).
fn fill(template: &str, rng: &mut Rng, token: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('{') {
        let (key, after) = after.split_once('}').expect("placeholders are closed");
        out.push_str(before);
        out.push_str(&match key {
            "t" => token.to_owned(),
            "code" => rng.pick(CODES).to_owned(),
            "num" => (10_000 + rng.below(90_000)).to_string(),
            "digit" => (1 + rng.below(9)).to_string(),
            "secs" => rng.pick(&[5, 10, 15, 30, 45, 60, 90, 120]).to_string(),
            "svc" => rng.pick(SERVICES).to_owned(),
            "pct" => (91 + rng.below(9)).to_string(),
            "host" => rng.pick(HOSTS).to_owned(),
            "port" => rng.pick(&[443, 5432, 6379, 8080, 9090]).to_string(),
            "status" => (1 + rng.below(254)).to_string(),
            "stage" => rng.pick(STAGES).to_owned(),
            "line" => (2 + rng.below(97)).to_string(),
            other => panic!("no placeholder {other}"),
        });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The text of a screenshot: one to three lines of an error report, with
/// the attachment's unique word.
fn screenshot_text(attachment_id: u64) -> String {
    let mut rng = Rng::new(attachment_id ^ 0x5C4EE7);
    let token = unique_word(attachment_id);
    let template = rng.pick(HEADERS);
    let header = fill(template, &mut rng, &token);
    let token_template = rng.pick(TOKEN_LINES);
    match rng.below(3) {
        0 => format!("{header} ref {token}"),
        1 => format!("{header}\n{}", fill(token_template, &mut rng, &token)),
        _ => {
            let token_line = fill(token_template, &mut rng, &token);
            let detail = rng.pick(DETAILS);
            format!("{header}\n{token_line}\n{}", fill(detail, &mut rng, &token))
        }
    }
}

fn font() -> &'static FontRef<'static> {
    static FONT_REF: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT_REF.get_or_init(|| FontRef::try_from_slice(FONT).expect("the bundled font parses"))
}

fn line_height() -> u32 {
    let sf = font().as_scaled(PxScale::from(TEXT_PX));
    (sf.height() + sf.line_gap()).ceil() as u32 + 8
}

fn line_width(line: &str) -> f32 {
    let sf = font().as_scaled(PxScale::from(TEXT_PX));
    let mut x = 0.0;
    let mut prev = None;
    for c in line.chars() {
        let id = sf.glyph_id(c);
        if let Some(p) = prev {
            x += sf.kern(p, id);
        }
        x += sf.h_advance(id);
        prev = Some(id);
    }
    x
}

/// A screenshot's pixels: the text, margins, and a little more room on the
/// right, as a cropped window would have.
fn text_dims(attachment_id: u64, text: &str) -> (u32, u32) {
    let widest = text.lines().map(line_width).fold(0.0f32, f32::max).ceil() as u32;
    let extra = (mix(attachment_id ^ 0xD1) % 160) as u32;
    let lines = text.lines().count() as u32;
    (widest + 2 * MARGIN + extra, lines * line_height() + 2 * MARGIN)
}

/// 8-bit grayscale, black text on white.
fn render_text(text: &str, w: u32, h: u32) -> Vec<u8> {
    let scale = PxScale::from(TEXT_PX);
    let sf = font().as_scaled(scale);
    let mut px = vec![255u8; (w * h) as usize];
    for (i, line) in text.lines().enumerate() {
        let baseline = (MARGIN + i as u32 * line_height() + 4) as f32 + sf.ascent().ceil();
        let mut x = MARGIN as f32;
        let mut prev = None;
        for c in line.chars() {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                x += sf.kern(p, id);
            }
            let glyph = id.with_scale_and_position(scale, point(x, baseline));
            x += sf.h_advance(id);
            prev = Some(id);
            let Some(outline) = font().outline_glyph(glyph) else { continue };
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let (x, y) = (bounds.min.x as i64 + gx as i64, bounds.min.y as i64 + gy as i64);
                if (0..w as i64).contains(&x) && (0..h as i64).contains(&y) {
                    let p = &mut px[(y as u32 * w + x as u32) as usize];
                    *p = (*p).min(255 - (coverage.clamp(0.0, 1.0) * 255.0).round() as u8);
                }
            });
        }
    }
    px
}

// ---------------------------------------------------------------- photos

fn photo_dims(attachment_id: u64) -> (u32, u32) {
    const SIZES: [(u32, u32); 4] = [(640, 480), (480, 640), (600, 450), (512, 384)];
    SIZES[(mix(attachment_id ^ 0xF070) % 4) as usize]
}

/// 8-bit RGB: a two-colour gradient, soft blobs, and faint noise.
fn render_photo(attachment_id: u64, w: u32, h: u32) -> Vec<u8> {
    let mut rng = Rng::new(attachment_id ^ 0xB10B);
    let colour = |rng: &mut Rng| [0, 1, 2].map(|_| 40.0 + rng.below(180) as f32);
    let (top, bottom) = (colour(&mut rng), colour(&mut rng));
    // Each blob's falloff, exp(-d²/r²), is a product of one along x and one along y.
    let blobs: Vec<([f32; 3], Vec<f32>, Vec<f32>)> = (0..3 + rng.below(4))
        .map(|_| {
            let c = colour(&mut rng);
            let (cx, cy) = (rng.below(w as u64) as f32, rng.below(h as u64) as f32);
            let r = (w.min(h) as f32) * (0.12 + rng.below(25) as f32 / 100.0);
            let falloff =
                |n: u32, centre: f32| (0..n).map(|i| (-(i as f32 - centre).powi(2) / (r * r)).exp()).collect();
            (c, falloff(w, cx), falloff(h, cy))
        })
        .collect();
    let seed = rng.next();
    // Plain arithmetic in the loop: this crate is built unoptimised for tests.
    let mut px = vec![0u8; (w * h * 3) as usize];
    let mut at = 0;
    for y in 0..h as usize {
        for x in 0..w as usize {
            let t = (x as f32 / w as f32 + y as f32 / h as f32) / 2.0;
            let (mut r, mut g, mut b) = (
                top[0] + (bottom[0] - top[0]) * t,
                top[1] + (bottom[1] - top[1]) * t,
                top[2] + (bottom[2] - top[2]) * t,
            );
            for (c, along_x, along_y) in &blobs {
                let a = along_x[x] * along_y[y] * 0.8;
                r += (c[0] - r) * a;
                g += (c[1] - g) * a;
                b += (c[2] - b) * a;
            }
            let noise = (mix(seed ^ ((y as u64) << 32 | x as u64)) % 7) as f32 - 3.0;
            px[at] = (r + noise).clamp(0.0, 255.0) as u8;
            px[at + 1] = (g + noise).clamp(0.0, 255.0) as u8;
            px[at + 2] = (b + noise).clamp(0.0, 255.0) as u8;
            at += 3;
        }
    }
    px
}

// ---------------------------------------------------------------- PNG bytes

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

fn ihdr(out: &mut Vec<u8>, w: u32, h: u32, colour_type: u8) {
    let mut data = Vec::with_capacity(13);
    data.extend_from_slice(&w.to_be_bytes());
    data.extend_from_slice(&h.to_be_bytes());
    data.extend_from_slice(&[8, colour_type, 0, 0, 0]);
    chunk(out, b"IHDR", &data);
}

fn encode_png(w: u32, h: u32, colour: png::ColorType, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(colour);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().expect("PNG header");
    writer.write_image_data(pixels).expect("PNG data");
    writer.finish().expect("PNG end");
    out
}

/// Length of a zlib stream of stored (uncompressed) blocks holding `raw` bytes.
fn zlib_stored_len(raw: u64) -> u64 {
    2 + raw + 5 * raw.div_ceil(65_535).max(1) + 4
}

/// The size of a PNG of these pixels stored uncompressed: what a rendered
/// one is padded to (plus a little, so sizes vary).
fn padded_size(w: u32, h: u32, channels: u64, attachment_id: u64) -> u64 {
    stored_png_size(w, h, channels) + mix(attachment_id ^ 0x9AD) % 997
}

/// The exact size [`stored_png`] writes.
fn stored_png_size(w: u32, h: u32, channels: u64) -> u64 {
    let raw = h as u64 * (1 + w as u64 * channels);
    8 + 25 + (12 + zlib_stored_len(raw)) + 12
}

/// Inserts a `paDd` chunk before IEND so the file is exactly `size` bytes.
fn pad_png(core: &[u8], size: u64) -> Vec<u8> {
    let size = size as usize;
    assert!(core.len() + 12 <= size, "a rendered PNG ({} bytes) outgrew its declared size {size}", core.len());
    let (body, iend) = core.split_at(core.len() - 12);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(body);
    chunk(&mut out, b"paDd", &vec![0u8; size - core.len() - 12]);
    out.extend_from_slice(iend);
    debug_assert_eq!(out.len(), size);
    out
}

/// A PNG whose pixels (rows already led by their filter byte) are stored uncompressed.
fn stored_png(w: u32, h: u32, channels: u64, raw: &[u8]) -> Vec<u8> {
    let mut z = fdeflate::StoredOnlyCompressor::new(std::io::Cursor::new(Vec::new())).expect("in memory");
    z.write_data(raw).expect("in memory");
    let z = z.finish().expect("in memory").into_inner();
    debug_assert_eq!(z.len() as u64, zlib_stored_len(raw.len() as u64));
    let mut out = Vec::with_capacity(stored_png_size(w, h, channels) as usize);
    out.extend_from_slice(&SIGNATURE);
    ihdr(&mut out, w, h, if channels == 3 { 2 } else { 0 });
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn oversize_dims(attachment_id: u64) -> (u32, u32) {
    (2048, 1536 + (mix(attachment_id ^ 0x0E5) % 64) as u32)
}

/// A scan's worth of smooth colour in bands of 32 rows, rows led by filter byte 0.
fn oversize_pixels(attachment_id: u64, w: u32, h: u32) -> Vec<u8> {
    let tint = (mix(attachment_id ^ 0x7147) % 64) as u8;
    let row_len = 1 + 3 * w as usize;
    let mut raw = vec![0u8; row_len * h as usize];
    let mut band = vec![0u8; row_len];
    for (y, row) in raw.chunks_mut(row_len).enumerate() {
        if y % 32 == 0 {
            let shade = (y * 255 / h as usize) as u8;
            for (x, px) in band[1..].chunks_mut(3).enumerate() {
                px[0] = (x * 255 / w as usize) as u8;
                px[1] = shade;
                px[2] = tint.wrapping_add(shade / 2);
            }
        }
        row.copy_from_slice(&band);
    }
    raw
}

const BROKEN_DIMS: (u32, u32) = (1280, 720);

/// Signature, header, and the first few KB of pixel data of a longer IDAT chunk.
fn broken_bytes(attachment_id: u64) -> Vec<u8> {
    static STREAM: OnceLock<Vec<u8>> = OnceLock::new();
    let stream = STREAM.get_or_init(|| {
        let (w, rows) = (BROKEN_DIMS.0 as usize, 64);
        let mut raw = Vec::with_capacity(rows * (1 + 3 * w));
        for y in 0..rows {
            raw.push(0);
            for x in 0..w {
                raw.extend_from_slice(&[(x % 256) as u8, (y * 4) as u8, ((x + y) % 256) as u8]);
            }
        }
        fdeflate::compress_to_vec(&raw)
    });
    let keep = (1500 + mix(attachment_id ^ 0xB0) % 6000) as usize;
    let keep = keep.min(stream.len() - 1);
    let mut out = Vec::with_capacity(8 + 25 + 8 + keep);
    out.extend_from_slice(&SIGNATURE);
    ihdr(&mut out, BROKEN_DIMS.0, BROKEN_DIMS.1, 2);
    out.extend_from_slice(&(stream.len() as u32 + 40_000).to_be_bytes());
    out.extend_from_slice(b"IDAT");
    out.extend_from_slice(&stream[..keep]);
    out
}

/// A PNG claiming 60000×60000 RGBA (13.4 GiB of pixels), with the
/// compressed zeros of its first rows: small, and ruinous to decode.
fn bomb_bytes() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let zeros = vec![0u8; 8 * (1 + 4 * BOMB_PIXELS as usize)];
        let mut out = Vec::new();
        out.extend_from_slice(&SIGNATURE);
        ihdr(&mut out, BOMB_PIXELS, BOMB_PIXELS, 6);
        chunk(&mut out, b"IDAT", &fdeflate::compress_to_vec(&zeros));
        chunk(&mut out, b"IEND", &[]);
        out
    })
}

/// What a `NotImage` file holds: a log excerpt.
fn log_excerpt(attachment_id: u64) -> String {
    const EVENTS: &[&str] = &[
        "INFO  starting worker pool (8 threads)",
        "INFO  connected to db-primary:5432",
        "WARN  slow query took 2.4s",
        "ERROR request failed: upstream timed out",
        "INFO  retrying in 10s",
        "DEBUG cache hit ratio 0.93",
        "WARN  certificate expires in 3 days",
        "ERROR relay-gateway: connection reset by peer",
    ];
    let mut rng = Rng::new(attachment_id ^ 0x106);
    let (day, mut secs) = (1 + rng.below(28), rng.below(80_000));
    let mut out = String::new();
    for _ in 0..4 + rng.below(9) {
        secs += rng.below(90);
        out.push_str(&format!(
            "2025-03-{day:02} {:02}:{:02}:{:02} {}\n",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            rng.pick(EVENTS)
        ));
    }
    out
}

// ---------------------------------------------------------------- links

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// How a world's attachment links are written and checked: where the CDN
/// is, the secret that signs links, and how long links in messages last.
#[derive(Debug, Clone)]
pub(crate) struct Links {
    pub base_url: String,
    secret: u64,
    /// Seconds; zero or less: messages carry expired links.
    lifetime: i64,
    /// When the lifetime was set (server start, or `set_link_lifetime`).
    epoch: i64,
}

/// Hosts whose attachment links the refresh endpoint knows as this fake's.
const DISCORD_CDNS: [&str; 2] = ["https://cdn.discordapp.com", "https://media.discordapp.net"];

impl Links {
    /// Links of a world no server serves: Discord's host, long expired.
    pub(crate) fn unserved(seed: u64) -> Links {
        Links { base_url: DISCORD_CDNS[0].into(), secret: mix(seed ^ 0x5EC2E7), lifetime: DAY, epoch: UNSERVED_EPOCH }
    }

    /// Links of the server at `base_url`, signed with `secret`, issued from `now` for a day.
    pub(crate) fn served(base_url: String, secret: u64, now: i64) -> Links {
        Links { base_url, secret, lifetime: DAY, epoch: now }
    }

    pub(crate) fn set_lifetime(&mut self, secs: i64, now: i64) {
        self.lifetime = secs;
        self.epoch = now;
    }

    /// (issued, expiry) of the links messages carry at `now`. Links stay the
    /// same for a lifetime (a page fetched twice carries the same link), then
    /// the next ones are issued.
    fn window(&self, now: i64) -> (i64, i64) {
        if self.lifetime > 0 {
            let issued = self.epoch + (now - self.epoch).max(0) / self.lifetime * self.lifetime;
            (issued, issued + self.lifetime)
        } else {
            (self.epoch + self.lifetime - DAY, self.epoch + self.lifetime)
        }
    }

    pub(crate) fn sign(&self, channel: u64, attachment: u64, ex: i64, is: i64) -> String {
        (0..4u8)
            .map(|round| {
                let mut h = DefaultHasher::new();
                (self.secret, round, channel, attachment, ex, is).hash(&mut h);
                format!("{:016x}", h.finish())
            })
            .collect()
    }

    fn url(&self, channel: u64, attachment: u64, filename: &str, is: i64, ex: i64) -> String {
        let hm = self.sign(channel, attachment, ex, is);
        format!("{}/attachments/{channel}/{attachment}/{filename}?ex={ex:x}&is={is:x}&hm={hm}", self.base_url)
    }

    /// The link a message carries at `now`.
    pub(crate) fn message_url(&self, channel: u64, attachment: u64, filename: &str, now: i64) -> String {
        let (is, ex) = self.window(now);
        self.url(channel, attachment, filename, is, ex)
    }

    /// A link issued at `now`, valid for a day (what the refresh endpoint gives).
    pub(crate) fn fresh_url(&self, channel: u64, attachment: u64, filename: &str, now: i64) -> String {
        self.url(channel, attachment, filename, now, now + DAY)
    }

    /// Whether a request's `ex`, `is` and `hm` are a valid, unexpired link.
    pub(crate) fn accepts(&self, channel: u64, attachment: u64, query: &[(String, String)], now: i64) -> bool {
        let q = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let hex = |k: &str| q(k).and_then(|v| i64::from_str_radix(v, 16).ok());
        match (hex("ex"), hex("is"), q("hm")) {
            (Some(ex), Some(is), Some(hm)) => ex >= now && hm == self.sign(channel, attachment, ex, is),
            _ => false,
        }
    }

    /// The channel, attachment and file name of one of this fake's links
    /// (also as written with Discord's hosts, as exports carry them).
    pub(crate) fn parse(&self, url: &str) -> Option<(u64, u64, String)> {
        let path = url.split(['?', '#']).next()?;
        let rest = std::iter::once(self.base_url.as_str())
            .chain(DISCORD_CDNS)
            .find_map(|base| path.strip_prefix(base))?
            .strip_prefix("/attachments/")?;
        let mut parts = rest.split('/');
        let (channel, attachment, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some((channel.parse().ok()?, attachment.parse().ok()?, name.to_owned()))
    }
}

// ---------------------------------------------------------------- the world's attachments

impl World {
    /// Every attachment of every message, in channel and message order.
    pub fn attachments(&self) -> Vec<FakeAttachment> {
        let mut out = Vec::new();
        for g in &self.guilds {
            for c in &g.channels {
                for m in c.messages.iter().filter(|m| m.attachments > 0) {
                    for i in 0..m.attachments as u64 {
                        let attachment_id = m.id + 1 + i;
                        out.push(FakeAttachment {
                            guild_id: g.id,
                            channel_id: c.id,
                            message_id: m.id,
                            attachment_id,
                            file: attachment_file(attachment_id),
                        });
                    }
                }
            }
        }
        out
    }

    /// The attachment with this id in this channel, if a message there has it.
    pub fn find_attachment(&self, channel_id: u64, attachment_id: u64) -> Option<FakeAttachment> {
        let (g, c) = self.channel(channel_id)?;
        let before = c.messages.partition_point(|m| m.id < attachment_id);
        // Attachment ids follow their message's id (at most 255 of them).
        let m = c.messages[..before]
            .iter()
            .rev()
            .take_while(|m| attachment_id - m.id <= 255)
            .find(|m| attachment_id - m.id <= m.attachments as u64)?;
        Some(FakeAttachment {
            guild_id: g.id,
            channel_id,
            message_id: m.id,
            attachment_id,
            file: attachment_file(attachment_id),
        })
    }

    /// The link to an attachment as messages carry it now.
    pub(crate) fn attachment_url(&self, channel_id: u64, attachment_id: u64, filename: &str) -> String {
        self.links.message_url(channel_id, attachment_id, filename, unix_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorldSpec;

    fn decode(bytes: &[u8]) -> Result<(png::OutputInfo, Vec<u8>), png::DecodingError> {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info()?;
        let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
        let info = reader.next_frame(&mut buf)?;
        buf.truncate(info.buffer_size());
        Ok((info, buf))
    }

    #[test]
    fn every_kind_occurs_in_the_standard_world_with_unique_words() {
        let world = World::generate(&WorldSpec::standard());
        let all = world.attachments();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for a in &all {
            *counts.entry(a.file.kind.name()).or_default() += 1;
            assert_eq!(world.find_attachment(a.channel_id, a.attachment_id).as_ref(), Some(a));
        }
        for kind in ["text", "photo", "broken", "not-image", "oversize", "bomb"] {
            assert!(counts.get(kind).copied().unwrap_or(0) > 0, "no {kind} among {counts:?}");
        }
        assert!(counts["text"] * 2 > all.len(), "{counts:?}");
        // Each screenshot's word is its own, and in its text.
        let mut words: Vec<String> = all.iter().map(|a| unique_word(a.attachment_id)).collect();
        for a in &all {
            if let FakeKind::Text(text) = &a.file.kind {
                assert!(text.split_whitespace().any(|w| w == unique_word(a.attachment_id)), "{text}");
                assert!(text.lines().count() <= 3);
            }
        }
        words.sort();
        words.dedup();
        assert_eq!(words.len(), all.len());
        // Not an attachment: a message id, an id past the message's attachments, another channel.
        let a = &all[0];
        assert!(world.find_attachment(a.channel_id, a.message_id).is_none());
        assert!(world.find_attachment(a.channel_id, a.attachment_id + 1).is_none());
        let other = world.guilds[0].channels.iter().find(|c| c.id != a.channel_id).unwrap().id;
        assert!(world.find_attachment(other, a.attachment_id).is_none());
    }

    #[test]
    fn files_are_what_they_claim_to_be_and_exactly_their_declared_size() {
        let world = World::generate(&WorldSpec::standard());
        let mut seen = std::collections::HashSet::new();
        for a in world.attachments() {
            let (id, file) = (a.attachment_id, a.file);
            // One of each kind (and every screenshot): decoding is slow in debug builds.
            if !seen.insert(file.kind.name()) && !matches!(file.kind, FakeKind::Text(_)) {
                continue;
            }
            let bytes = file_bytes(id);
            assert_eq!(bytes.len() as u64, file.declared_size, "{file:?}");
            assert_eq!(file.content_type, "image/png");
            assert!(file.filename.ends_with(".png"));
            match &file.kind {
                FakeKind::Text(_) | FakeKind::Photo => {
                    let (info, pixels) = decode(&bytes).expect("decodes");
                    assert_eq!((Some(info.width), Some(info.height)), (file.width, file.height));
                    let want =
                        if file.kind == FakeKind::Photo { png::ColorType::Rgb } else { png::ColorType::Grayscale };
                    assert_eq!(info.color_type, want);
                    if let FakeKind::Text(_) = file.kind {
                        // Black text on white, margins clear.
                        assert!(pixels.iter().filter(|&&p| p < 64).count() > 500);
                        assert!(pixels[..info.width as usize * 10].iter().all(|&p| p == 255));
                    }
                }
                FakeKind::Oversize => {
                    assert!(file.declared_size > OVERSIZE_BYTES);
                    let (info, _) = decode(&bytes).expect("a valid PNG");
                    assert_eq!((Some(info.width), Some(info.height)), (file.width, file.height));
                }
                FakeKind::Broken => {
                    assert!(bytes.starts_with(&SIGNATURE) && bytes.len() < 10_000);
                    assert!(decode(&bytes).is_err());
                }
                FakeKind::Bomb => {
                    assert!(bytes.len() < 100_000, "{}", bytes.len());
                    let reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info().expect("a header");
                    assert_eq!((reader.info().width, reader.info().height), (BOMB_PIXELS, BOMB_PIXELS));
                    assert_eq!((file.width, file.height), (Some(BOMB_PIXELS), Some(BOMB_PIXELS)));
                }
                FakeKind::NotImage => {
                    assert!(file.filename.starts_with("image-") && file.width.is_none());
                    assert!(std::str::from_utf8(&bytes).unwrap().contains(" INFO "));
                }
            }
        }
        assert_eq!(seen.len(), 6);
    }

    #[test]
    fn rendering_is_deterministic_and_the_cache_serves_the_same_bytes() {
        let world = World::generate(&WorldSpec::standard());
        let cache = FileCache::default();
        for kind in ["text", "photo", "broken", "not-image", "bomb"] {
            let a = world.attachments().into_iter().find(|a| a.file.kind.name() == kind).unwrap();
            assert_eq!(attachment_file(a.attachment_id), a.file);
            let first = file_bytes(a.attachment_id);
            assert_eq!(first, file_bytes(a.attachment_id), "{kind}");
            assert_eq!(first, cache.bytes(a.attachment_id, &a.file), "{kind}");
            assert_eq!(first, cache.bytes(a.attachment_id, &a.file), "{kind}");
        }
        // The same text, to the byte, from a fixed id (a change here changes every test's screenshots).
        let text = (0..).map(|i| 1000 + i).find(|id| matches!(attachment_file(*id).kind, FakeKind::Text(_))).unwrap();
        let FakeKind::Text(t) = attachment_file(text).kind else { unreachable!() };
        assert!(t.contains(&unique_word(text)));
    }

    #[test]
    fn links_are_signed_and_expire() {
        let now = unix_now();
        let links = Links::served("http://127.0.0.1:9".into(), 42, now);
        let url = links.message_url(10, 20, "a.png", now);
        assert!(url.starts_with("http://127.0.0.1:9/attachments/10/20/a.png?ex="), "{url}");
        let query = |url: &str| -> Vec<(String, String)> {
            form_urlencoded::parse(url.split_once('?').unwrap().1.as_bytes()).into_owned().collect()
        };
        let q = query(&url);
        let ex = i64::from_str_radix(&q[0].1, 16).unwrap();
        let is = i64::from_str_radix(&q[1].1, 16).unwrap();
        assert_eq!((q[0].0.as_str(), q[1].0.as_str(), q[2].0.as_str()), ("ex", "is", "hm"));
        assert_eq!((ex - is, is), (DAY, now));
        assert_eq!(q[2].1.len(), 64);
        assert!(links.accepts(10, 20, &q, now));
        assert!(links.accepts(10, 20, &q, ex), "valid through its expiry second");
        assert!(!links.accepts(10, 20, &q, ex + 1), "expired");
        assert!(!links.accepts(11, 20, &q, now), "another channel");
        assert!(!links.accepts(10, 21, &q, now), "another attachment");
        let mut tampered = q.clone();
        tampered[0].1 = format!("{:x}", ex + 3600);
        assert!(!links.accepts(10, 20, &tampered, now), "a later expiry, same signature");
        assert!(!links.accepts(10, 20, &q[..2], now), "no signature");
        let other_server = Links::served("http://127.0.0.1:9".into(), 43, now);
        assert!(!other_server.accepts(10, 20, &q, now), "another server's secret");
        // The same link all day; then the next.
        assert_eq!(links.message_url(10, 20, "a.png", now + 100), url);
        assert_ne!(links.message_url(10, 20, "a.png", now + DAY), url);
        // Negative lifetimes: links already expired.
        let mut expired = links.clone();
        expired.set_lifetime(-60, now);
        let q = query(&expired.message_url(10, 20, "a.png", now));
        assert!(!expired.accepts(10, 20, &q, now));
        assert!(expired.accepts(10, 20, &q, now - 61), "it was valid, before");
        // Refreshed links last a day, whatever the lifetime.
        let q = query(&expired.fresh_url(10, 20, "a.png", now));
        assert!(expired.accepts(10, 20, &q, now + DAY - 1));
        // Parsing: ours and Discord's hosts, nothing else.
        assert_eq!(links.parse(&url), Some((10, 20, "a.png".into())));
        assert_eq!(links.parse("https://cdn.discordapp.com/attachments/1/2/b.png"), Some((1, 2, "b.png".into())));
        assert_eq!(links.parse("https://example.com/attachments/1/2/b.png"), None);
        assert_eq!(links.parse("http://127.0.0.1:9/attachments/1/2/b.png/c"), None);
    }

    /// A served message's attachment: (channel, attachment, its URL in the message page).
    async fn served_attachment(fake: &crate::FakeDiscord, http: &reqwest::Client, kind: &str) -> (u64, u64, String) {
        let a = fake.world().attachments().into_iter().find(|a| a.file.kind.name() == kind).unwrap();
        let page: serde_json::Value = http
            .get(format!(
                "{}/api/v10/channels/{}/messages?around={}&limit=1",
                fake.base_url(),
                a.channel_id,
                a.message_id
            ))
            .header("authorization", format!("Bot {}", fake.token()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let json = &page[0]["attachments"][0];
        assert_eq!(json["id"], a.attachment_id.to_string());
        assert_eq!(json["filename"], a.file.filename);
        assert_eq!(json["size"], a.file.declared_size);
        assert_eq!(json["content_type"], "image/png");
        assert_eq!(json["width"].as_u64().map(|w| w as u32), a.file.width);
        (a.channel_id, a.attachment_id, json["url"].as_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn the_cdn_serves_signed_links_without_a_token_and_refreshes_expired_ones() {
        let fake =
            crate::FakeDiscord::start(World::generate(&WorldSpec::standard()), crate::Limits::default()).await.unwrap();
        let http = reqwest::Client::new();
        let (channel, attachment, url) = served_attachment(&fake, &http, "text").await;
        assert!(url.starts_with(&format!("{}/attachments/{channel}/{attachment}/screenshot-", fake.base_url())));
        assert_eq!(fake.attachment_url(channel, attachment).as_deref(), Some(url.as_str()));
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "image/png");
        let length: usize = resp.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let body = resp.bytes().await.unwrap();
        assert_eq!((length, body.to_vec()), (body.len(), file_bytes(attachment)));
        let log = fake.requests();
        let (api, cdn) = (&log[log.len() - 2], &log[log.len() - 1]);
        assert!(api.authorized && !cdn.authorized);
        assert_eq!((cdn.method.as_str(), cdn.status, cdn.outcome), ("GET", 200, "ok"));
        assert_eq!(
            cdn.path,
            format!(
                "/attachments/{channel}/{attachment}/{}",
                url.split('/').nth(6).unwrap().split('?').next().unwrap()
            )
        );

        // Broken links: 404 with Discord's words.
        let gone = |u: String| {
            let http = http.clone();
            async move {
                let resp = http.get(u).send().await.unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap())
            }
        };
        let no_longer = (404, "This content is no longer available.".to_string());
        let bad_sig = format!("{}0", &url[..url.len() - 1]).replace("hm=", "hm=f");
        assert_eq!(gone(bad_sig).await, no_longer);
        assert_eq!(gone(url.split('?').next().unwrap().to_owned()).await, no_longer);
        assert_eq!(gone(url.replace("/screenshot-", "/other-")).await, no_longer);
        let signed = |ch: u64, id: u64| fake.world().links.fresh_url(ch, id, "screenshot-1.png", unix_now());
        assert_eq!(gone(signed(channel, attachment + 7)).await, no_longer, "no such attachment");
        assert_eq!(gone(signed(1, attachment)).await, no_longer, "no such channel");

        // The file's type as uploaded, even when it lies.
        let (_, _, lying) = served_attachment(&fake, &http, "not-image").await;
        let resp = http.get(&lying).send().await.unwrap();
        assert_eq!((resp.status().as_u16(), resp.headers()["content-type"].to_str().unwrap()), (200, "image/png"));
        assert!(!resp.bytes().await.unwrap().starts_with(&SIGNATURE));

        // Faults apply to the CDN.
        fake.set_faults(vec![crate::Fault::always(crate::FaultKind::Status(503)).on("/attachments/").times(1)]);
        assert_eq!(http.get(&url).send().await.unwrap().status(), 503);
        assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
        fake.set_faults(vec![]);

        // Expired links in messages; refreshed, they work again.
        fake.set_link_lifetime(-60);
        let (_, _, expired) = served_attachment(&fake, &http, "text").await;
        assert_ne!(expired, url);
        assert_eq!(gone(expired.clone()).await, no_longer);
        let refresh = |body: serde_json::Value, token: Option<String>| {
            let mut req = http.post(format!("{}/api/v10/attachments/refresh-urls", fake.base_url())).json(&body);
            if let Some(t) = token {
                req = req.header("authorization", format!("Bot {t}"));
            }
            async move {
                let resp = req.send().await.unwrap();
                (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap())
            }
        };
        let token = Some(fake.token());
        let foreign = "https://example.com/attachments/1/2/x.png?ex=1&is=1&hm=00";
        let exported = format!(
            "https://cdn.discordapp.com/attachments/{channel}/{attachment}/{}",
            url.split('/').nth(6).unwrap().split('?').next().unwrap()
        );
        let (status, answer) =
            refresh(serde_json::json!({"attachment_urls": [expired, foreign, exported]}), token.clone()).await;
        assert_eq!(status, 200, "{answer}");
        let refreshed = answer["refreshed_urls"].as_array().unwrap();
        assert_eq!(refreshed.len(), 3);
        assert_eq!(refreshed[0]["original"], expired.as_str());
        assert_eq!(refreshed[1]["original"], foreign);
        assert_eq!(refreshed[1]["refreshed"], foreign);
        for r in [&refreshed[0], &refreshed[2]] {
            let fresh = r["refreshed"].as_str().unwrap();
            assert!(fresh.starts_with(&url[..url.find('?').unwrap()]), "{fresh}");
            assert_eq!(http.get(fresh).send().await.unwrap().status(), 200);
        }
        let last = fake.requests().into_iter().rfind(|r| r.method == "POST").unwrap();
        assert_eq!(
            (last.path.as_str(), last.query("urls"), last.authorized),
            ("/api/v10/attachments/refresh-urls", Some("3"), true)
        );

        // Refreshing needs the token and a body of at most 50 links.
        assert_eq!(refresh(serde_json::json!({"attachment_urls": []}), None).await.0, 401);
        let (status, err) = refresh(serde_json::json!({"attachment_urls": vec![foreign; 51]}), token.clone()).await;
        assert_eq!((status, err["code"].as_u64()), (400, Some(50035)));
        let (status, err) = refresh(serde_json::json!({"urls": []}), token.clone()).await;
        assert_eq!((status, err["code"].as_u64()), (400, Some(50035)));
        let (status, answer) = refresh(serde_json::json!({"attachment_urls": []}), token).await;
        assert_eq!((status, answer), (200, serde_json::json!({"refreshed_urls": []})));
        // It is an API route, with the API's rate-limit headers.
        let resp = http
            .post(format!("{}/api/v10/attachments/refresh-urls", fake.base_url()))
            .header("authorization", format!("Bot {}", fake.token()))
            .json(&serde_json::json!({"attachment_urls": []}))
            .send()
            .await
            .unwrap();
        assert!(resp.headers().contains_key("x-ratelimit-bucket"));
        fake.shutdown().await;
    }

    /// How long files take to make, by kind (`-- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn render_times() {
        let world = World::generate(&WorldSpec::standard());
        let all = world.attachments();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for a in &all {
            *counts.entry(a.file.kind.name()).or_default() += 1;
        }
        eprintln!("{} attachments: {counts:?}", all.len());
        for kind in ["text", "photo", "broken", "not-image", "oversize", "bomb"] {
            let ids: Vec<u64> = all.iter().filter(|a| a.file.kind.name() == kind).map(|a| a.attachment_id).collect();
            let start = std::time::Instant::now();
            for id in &ids {
                std::hint::black_box(attachment_file(*id));
            }
            let described = start.elapsed() / ids.len() as u32;
            let start = std::time::Instant::now();
            let bytes: usize = ids.iter().map(|id| file_bytes(*id).len()).sum();
            let made = start.elapsed() / ids.len() as u32;
            eprintln!(
                "{kind}: {} files, described in {described:?}, made in {made:?} each, {} bytes each",
                ids.len(),
                bytes / ids.len()
            );
        }
    }

    /// Writes screenshots and photos (`<id>.png`, and `<id>.txt` with the
    /// expected text) to `$FAKE_CDN_SAMPLES`, to check them with an OCR engine:
    /// `FAKE_CDN_SAMPLES=/tmp/s cargo test -p fake-discord write_samples -- --ignored`.
    #[test]
    #[ignore]
    fn write_samples() {
        let dir = std::path::PathBuf::from(std::env::var("FAKE_CDN_SAMPLES").expect("FAKE_CDN_SAMPLES"));
        std::fs::create_dir_all(&dir).unwrap();
        let n: usize = std::env::var("FAKE_CDN_SAMPLE_COUNT").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
        let world = World::generate(&WorldSpec::standard());
        // `$FAKE_CDN_SAMPLE_IDS` (comma-separated) first, then the standard world's, then more.
        let chosen: Vec<u64> = std::env::var("FAKE_CDN_SAMPLE_IDS")
            .map(|ids| ids.split(',').filter_map(|id| id.trim().parse().ok()).collect())
            .unwrap_or_default();
        let ids = chosen
            .into_iter()
            .chain(world.attachments().into_iter().map(|a| a.attachment_id))
            .chain((1..).map(|i| mix(i) >> 8));
        let (mut texts, mut photos) = (0, 0);
        for id in ids {
            let file = attachment_file(id);
            match &file.kind {
                FakeKind::Text(text) if texts < n => {
                    texts += 1;
                    std::fs::write(dir.join(format!("text-{id}.txt")), text).unwrap();
                    std::fs::write(dir.join(format!("text-{id}.tok")), unique_word(id)).unwrap();
                }
                FakeKind::Photo if photos < n / 4 => photos += 1,
                _ if texts >= n && photos >= n / 4 => break,
                _ => continue,
            }
            std::fs::write(dir.join(format!("{}-{id}.png", file.kind.name())), file_bytes(id)).unwrap();
        }
    }
}
