//! Text in images (OCR): Tesseract through its C API, loaded at run time.
//!
//! This module owns everything between an attachment's bytes and the text
//! found in it:
//! - [`sniff`]: what the bytes are (format, MIME type, pixel size), read from
//!   the header; the file name and the server's content type are not trusted.
//! - [`Engine::recognize`]: refuses what is not an image, what declares more
//!   than [`MAX_PIXELS`] or [`MAX_SIDE`] in its header or in any frame past
//!   it (decompression bombs, refused before any decoding: [`check_sizes`]),
//!   what stops before its end marker ([`complete`]) and what does not
//!   decode; decodes with Leptonica, enlarges short images, recognizes with
//!   Tesseract (LSTM, English) and keeps the words that pass the confidence
//!   rule.
//! - [`Engine::version`]: the identity of engine, language data and this
//!   module's processing, for a cache of results to key on.
//!
//! # Why run-time loading
//! Linking Tesseract would make it a build dependency of the whole program,
//! and most installs never look at images. Instead the libraries are opened
//! with `libloading` when an engine is first asked for: the binary builds and
//! runs without them, and [`Engine::load`] then says what to install
//! ([`Unavailable`]). On Debian/Ubuntu that is `tesseract-ocr
//! tesseract-ocr-eng` (`scripts/setup-ocr.sh` installs them). The C
//! functions used are declared by hand in `ffi.rs`, from `tesseract/capi.h`
//! and `leptonica/allheaders.h`.
//!
//! # The confidence rule
//! Tesseract always answers something: given a photograph it reads grass and
//! clouds as strings of letters. Each word comes with a confidence (0..100);
//! words below [`MIN_WORD_CONFIDENCE`] are dropped, and words that are a
//! single character or have no letter or digit (what icons, bullets and
//! borders turn into) need [`MIN_NOISE_CONFIDENCE`]. A picture without text
//! gives empty text; [`Recognized::confidence`] is the mean over the words
//! kept.
//!
//! # Threads
//! An [`Engine`] is one Tesseract instance, used by one thread at a time: it
//! is `Send`, not `Sync`. For N threads make N engines with
//! [`Tesseract::engine`] (or [`Engine::another`]): they share the loaded
//! libraries, and each loads its own copy of the language data (about 20 MB
//! for `eng`).

mod ffi;
mod sniff;
mod text;

#[cfg(test)]
pub(crate) mod tests;

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use ffi::{Api, OwnedPix, ResultIter, TessBaseApi};
pub use sniff::{complete, sniff, ImageFormat, Sniffed};
pub use text::{MIN_LONE_WORD_CONFIDENCE, MIN_NOISE_CONFIDENCE, MIN_WORD_CONFIDENCE};

/// Images declaring more pixels than this are refused before decoding: 40
/// megapixels, a 7300x5500 photograph. Decoded to 32-bit pixels that is
/// 160 MB, before Tesseract's own copies.
pub const MAX_PIXELS: u64 = 40_000_000;

/// Images wider or taller than this are refused before decoding, whatever
/// their pixel count (a 20000x2000 strip is allowed, a 100000x10 one not).
pub const MAX_SIDE: u32 = 20_000;

/// An animated GIF's frames are all decoded at once (Leptonica reads GIFs
/// through giflib's `DGifSlurp`, which keeps every frame at one byte a
/// pixel, then uses the first): GIFs whose frames have more pixels in all
/// are refused before decoding. 160 MB, what the largest image allowed
/// takes decoded to 32-bit pixels.
pub const MAX_GIF_PIXELS: u64 = 4 * MAX_PIXELS;

/// Images shorter than this (in pixels) are enlarged 2x before recognition:
/// a line of chat text cut out of a screenshot, a button, a caption.
/// Tesseract reads small type poorly: in single-line strips of DejaVu Sans,
/// the least sure word of a line scored 42..81 at 9..16 px as drawn, and
/// 91..93 enlarged (9 px text was misread before, read right after). From
/// 18 px on it makes no difference. Taller images are left alone: enlarging
/// the chat screenshot fixture did not improve it and took 4x the time.
pub const UPSCALE_BELOW_HEIGHT: u32 = 60;

/// The Tesseract language recognized.
pub const LANGUAGE: &str = "eng";

/// Page segmentation mode: `PSM_AUTO` (3), layout analysis without
/// orientation detection. On a chat screenshot (sidebar, avatars, messages)
/// it reads each column in order, while `PSM_SPARSE_TEXT` (11) interleaves
/// the sidebar with the messages and reads avatars as "@". Both read the
/// other fixtures alike (11 splits lines with blank lines between them).
const PAGE_SEG_MODE: std::ffi::c_int = 3;

/// Resolution Tesseract is told images have. Screenshots carry none (or
/// JFIF's "1x1" aspect ratio), which makes Tesseract warn and guess; 96 is
/// the resolution of a screen at 100 % scale. (70, 96, 150 and 300 gave the
/// same words and confidences on every fixture: the LSTM recognizer does not
/// use it, so only the warning and the guess are at stake.)
const ASSUMED_DPI: &str = "96";

/// Revision of this module's processing: confidence thresholds, word
/// filtering, text layout, page segmentation mode, upscaling. Part of
/// [`Engine::version`], so bump it whenever any of them changes and cached
/// results are re-recognized.
pub const PROCESSING_REVISION: u32 = 1;

/// Why OCR cannot run: a library or the language data is missing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "OCR unavailable: the Tesseract library could not be loaded (tried {tried}: {reason}). \
         Install Tesseract 4 or newer with English data: on Debian/Ubuntu \
         `apt-get install tesseract-ocr tesseract-ocr-eng` (scripts/setup-ocr.sh does this), \
         on macOS `brew install tesseract`"
    )]
    Tesseract { tried: String, reason: String },
    #[error(
        "OCR unavailable: the Leptonica library could not be loaded (tried {tried}: {reason}). \
         Install it with Tesseract: on Debian/Ubuntu `apt-get install tesseract-ocr tesseract-ocr-eng`"
    )]
    Leptonica { tried: String, reason: String },
    #[error(
        "OCR unavailable: {library} has no function {symbol}; install Tesseract 4 or newer \
         (Debian/Ubuntu: `apt-get install tesseract-ocr tesseract-ocr-eng`)"
    )]
    Symbol { library: String, symbol: &'static str },
    #[error(
        "OCR unavailable: Tesseract could not load the '{language}' language data from {datapath}. \
         Install it (Debian/Ubuntu: `apt-get install tesseract-ocr-{language}`) or set \
         TESSDATA_PREFIX to the folder that holds {language}.traineddata"
    )]
    LanguageData { language: &'static str, datapath: String },
    #[error("OCR unavailable: Tesseract could not create a recognizer (out of memory?)")]
    Create,
}

/// Why an image was not recognized. The image's fault, not the engine's:
/// the engine stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not an image (no known image header)")]
    NotAnImage,
    #[error("image too large: {width}x{height} pixels declared (limits: {MAX_SIDE} per side, {MAX_PIXELS} in all)")]
    TooLarge { width: u32, height: u32 },
    #[error("image too large: {frames} frames of {pixels} pixels in all declared (limit: {MAX_GIF_PIXELS} in all)")]
    TooManyFrames { frames: u32, pixels: u64 },
    #[error("{0} images are not decoded for OCR")]
    Unsupported(ImageFormat),
    #[error("image could not be decoded: {0}")]
    Undecodable(String),
}

/// Text recognized in one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognized {
    /// The kept words: one line per text line, words separated by a space;
    /// empty when no word passed the confidence rule.
    pub text: String,
    /// Mean Tesseract confidence (0..100) of the kept words; 0 when none.
    pub confidence: f32,
    /// How many words were kept.
    pub words: usize,
}

/// Serialises the creation of engines: `TessBaseAPISetVariable("debug_file")`
/// writes one of Tesseract's process-wide parameters, and initialisation
/// reads them.
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// The Tesseract and Leptonica libraries, loaded once; cheap to clone and
/// shared between threads, each of which makes its own [`Engine`].
#[derive(Clone)]
pub struct Tesseract {
    api: Arc<Api>,
}

impl std::fmt::Debug for Tesseract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tesseract").field("version", &self.api.version()).finish()
    }
}

impl Tesseract {
    /// Opens the libraries and silences Leptonica's messages on stderr.
    ///
    /// Sets `OMP_THREAD_LIMIT=1` in the environment first, unless it is set
    /// already: see [`limit_openmp`].
    pub fn load() -> Result<Tesseract, Unavailable> {
        limit_openmp();
        let api = Api::load()?;
        let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: sets Leptonica's message threshold, an integer global; no
        // other thread creates an engine meanwhile (INIT_LOCK).
        unsafe { (api.set_msg_severity)(ffi::L_SEVERITY_NONE) };
        Ok(Tesseract { api: Arc::new(api) })
    }

    /// Tesseract's own version, e.g. "5.3.0".
    pub fn library_version(&self) -> String {
        self.api.version()
    }

    /// A new recognizer for [`LANGUAGE`]: loads the language data from
    /// `TESSDATA_PREFIX` when set, else from the library's compiled-in
    /// default. Takes about a tenth of a second.
    pub fn engine(&self) -> Result<Engine, Unavailable> {
        let prefix = std::env::var("TESSDATA_PREFIX").ok().filter(|p| !p.is_empty());
        self.engine_with(prefix)
    }

    /// [`Tesseract::engine`] with the language data folder given (`None`:
    /// the library's default).
    fn engine_with(&self, prefix: Option<String>) -> Result<Engine, Unavailable> {
        let api = &*self.api;
        let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: TessBaseAPICreate has no preconditions; NULL is checked.
        let handle = NonNull::new(unsafe { (api.base_create)() }).ok_or(Unavailable::Create)?;
        // From here on the handle is freed by Engine's Drop, also on error.
        let mut engine = Engine { lib: self.clone(), handle, version: String::new() };
        let h = handle.as_ptr();

        // Tesseract prints its messages (language data not found, resolution
        // guesses, ...) to stderr unless given a file; before Init, so that
        // Init's own complaints go there too. Our errors say what matters.
        set_variable(api, h, "debug_file", "/dev/null");

        let datapath = prefix.as_deref().and_then(|p| CString::new(p).ok());
        let language = CString::new(LANGUAGE).expect("no NUL in the language");
        // LSTM only (Init2, not Init3's default mode): the legacy engine that
        // Debian's eng.traineddata also holds adapts to each image it reads,
        // which would make an engine's results depend on what it read before.
        // SAFETY: `h` is a fresh handle; both strings are NUL-terminated and
        // outlive the call; a NULL datapath selects the default.
        let status = unsafe {
            (api.base_init2)(
                h,
                datapath.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
                language.as_ptr(),
                ffi::OEM_LSTM_ONLY,
            )
        };
        if status != 0 {
            return Err(Unavailable::LanguageData {
                language: LANGUAGE,
                datapath: match prefix {
                    Some(p) => format!("TESSDATA_PREFIX={p}"),
                    None => "the library's default location (unset TESSDATA_PREFIX)".to_string(),
                },
            });
        }
        // SAFETY: `h` is initialised.
        unsafe { (api.base_set_page_seg_mode)(h, PAGE_SEG_MODE) };
        set_variable(api, h, "user_defined_dpi", ASSUMED_DPI);

        engine.version = format!(
            "tesseract {} {}{} r{}",
            api.version(),
            LANGUAGE,
            language_data_digest(api, h).map(|d| format!("@{d}")).unwrap_or_default(),
            PROCESSING_REVISION
        );
        Ok(engine)
    }
}

/// Keeps Tesseract to one thread per recognition.
///
/// Distributions build Tesseract with OpenMP, and its LSTM then spreads every
/// line over a team of threads that spin while they wait. With other work on
/// the machine (other engines, the embedder) that is several times slower,
/// not faster: on 2 busy cores error.png took 162 ms with the default and
/// 45 ms with one thread; the chat screenshot 641 ms and 189 ms. Parallelism
/// comes from running one engine per thread instead.
///
/// libgomp reads `OMP_THREAD_LIMIT` once, when it is loaded, which is when
/// Tesseract is opened (this program does not link it otherwise); the
/// `num_threads` clauses in Tesseract's code override any run-time call, so
/// the environment variable is the only way. A value set by the user is
/// left alone. Setting a variable while other threads may read the
/// environment is what makes `set_var` unsafe in Rust 2024; glibc's
/// `setenv` never frees the array a concurrent `getenv` may be reading, and
/// this runs once per [`Tesseract::load`], before any engine exists.
fn limit_openmp() {
    if std::env::var_os("OMP_THREAD_LIMIT").is_none_or(|v| v.is_empty()) {
        std::env::set_var("OMP_THREAD_LIMIT", "1");
    }
}

/// `TessBaseAPISetVariable`; a variable Tesseract does not know is logged, not
/// fatal (the engine works without any of ours).
fn set_variable(api: &Api, handle: *mut TessBaseApi, name: &str, value: &str) {
    let (Ok(n), Ok(v)) = (CString::new(name), CString::new(value)) else { return };
    // SAFETY: `handle` is live; both strings are NUL-terminated and outlive
    // the call (Tesseract copies them).
    if unsafe { (api.base_set_variable)(handle, n.as_ptr(), v.as_ptr()) } == 0 {
        tracing::debug!(name, value, "Tesseract has no such variable");
    }
}

/// The first 12 hex digits of the SHA-256 of the language data file in use,
/// so that replacing it (tessdata_fast for tessdata_best, a newer release)
/// changes [`Engine::version`]. `None` when the file cannot be read.
fn language_data_digest(api: &Api, handle: *mut TessBaseApi) -> Option<String> {
    // SAFETY: `handle` is initialised; the returned string belongs to it and
    // is copied before any other call.
    let dir = unsafe {
        let p = (api.base_get_datapath)(handle);
        if p.is_null() {
            return None;
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    let path = std::path::Path::new(&dir).join(format!("{LANGUAGE}.traineddata"));
    let bytes = std::fs::read(&path).ok()?;
    let digest = Sha256::digest(&bytes);
    Some(digest.iter().take(6).map(|b| format!("{b:02x}")).collect())
}

/// One Tesseract recognizer with its language data loaded. Reusable for any
/// number of images; see the module documentation for threads.
pub struct Engine {
    lib: Tesseract,
    handle: NonNull<TessBaseApi>,
    version: String,
}

// SAFETY: a TessBaseAPI has no affinity to the thread that created it; what
// Tesseract forbids is using one instance from two threads at once. `Engine`
// is not `Sync` (the raw pointer field makes it so) and every call on the
// handle takes `&mut self` or happens in its creation or `drop`, so moving the engine
// to another thread leaves exactly one user. The process-wide state touched
// when creating engines is serialised by INIT_LOCK; the shared `Api` is
// immutable function pointers and library handles.
unsafe impl Send for Engine {}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("version", &self.version).finish()
    }
}

impl Engine {
    /// Loads the libraries and makes one engine. For more engines call
    /// [`Engine::another`] (or keep a [`Tesseract`]) rather than loading again.
    pub fn load() -> Result<Engine, Unavailable> {
        Tesseract::load()?.engine()
    }

    /// A new engine sharing this one's loaded libraries, e.g. for another
    /// thread.
    pub fn another(&self) -> Result<Engine, Unavailable> {
        self.lib.engine()
    }

    /// The libraries this engine runs on.
    pub fn library(&self) -> &Tesseract {
        &self.lib
    }

    /// What produced a result, for a cache to key on: Tesseract's version,
    /// the language and a digest of its data file, and
    /// [`PROCESSING_REVISION`]; e.g. "tesseract 5.3.0 eng@7af2b1c5e090 r1".
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The text in an image. Refuses, without decoding, what is not a known
    /// image, what is not decodable here, what is cut short and what
    /// declares more than [`MAX_SIDE`] or [`MAX_PIXELS`] anywhere
    /// ([`check_sizes`]); then decodes, enlarges short images and
    /// recognizes, keeping the words that pass the confidence rule.
    pub fn recognize(&mut self, bytes: &[u8]) -> Result<Recognized, Refused> {
        self.words(bytes).map(text::assemble)
    }

    /// Every word Tesseract reads in an image, before the confidence rule.
    fn words(&mut self, bytes: &[u8]) -> Result<Vec<text::Word>, Refused> {
        let sniffed = admit(bytes)?;

        let api = &*self.lib.api;
        // SAFETY: `bytes` is valid for its length; Leptonica copies what it
        // needs and returns a new image or NULL.
        let pix = OwnedPix::new(api, unsafe { (api.pix_read_mem)(bytes.as_ptr(), bytes.len()) })
            .ok_or_else(|| Refused::Undecodable(format!("{} data is corrupt", sniffed.format)))?;
        // The header was checked; the decoder's idea of the size is what gets
        // allocated from here on, so check it too.
        let (w, h) = pix.size();
        if w <= 0 || h <= 0 {
            return Err(Refused::Undecodable(format!("{} data decodes to {w}x{h} pixels", sniffed.format)));
        }
        if exceeds_caps(w as u64, h as u64) {
            let clamp = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
            return Err(Refused::TooLarge { width: clamp(w), height: clamp(h) });
        }
        // Enlarged within MAX_SIDE, which is under Tesseract's own limit of
        // 32767 pixels per side.
        let pix = if h < UPSCALE_BELOW_HEIGHT as i64 && 2 * w <= MAX_SIDE as i64 {
            // SAFETY: `pix` is live; pixScale returns a new image or NULL.
            OwnedPix::new(api, unsafe { (api.pix_scale)(pix.as_ptr(), 2.0, 2.0) }).unwrap_or(pix)
        } else {
            pix
        };

        let handle = self.handle.as_ptr();
        // SAFETY: `handle` is initialised and used by this thread only
        // (&mut self). SetImage2 takes its own reference to the image, which
        // TessBaseAPIClear drops; the result iterator is deleted (end of the
        // block) before Clear.
        let result = unsafe {
            (api.base_set_image2)(handle, pix.as_ptr());
            let result = if (api.base_recognize)(handle, std::ptr::null_mut()) != 0 {
                Err(Refused::Undecodable("Tesseract could not process the image".to_string()))
            } else {
                Ok(Words::new(api, (api.base_get_iterator)(handle)).collect())
            };
            (api.base_clear)(handle);
            result
        };
        drop(pix);
        result
    }
}

/// What is refused before anything decodes: bytes that are not a known
/// image, sizes over the caps, formats not decoded here, files cut short.
fn admit(bytes: &[u8]) -> Result<Sniffed, Refused> {
    let sniffed = sniff(bytes).ok_or(Refused::NotAnImage)?;
    let (width, height) = (sniffed.width, sniffed.height);
    if width == 0 || height == 0 {
        return Err(Refused::Undecodable(format!("the {} header declares {width}x{height} pixels", sniffed.format)));
    }
    check_sizes(&sniffed, bytes)?;
    if !sniffed.format.decodable() {
        return Err(Refused::Unsupported(sniffed.format));
    }
    if !complete(sniffed.format, bytes) {
        return Err(Refused::Undecodable(format!("{} data is truncated", sniffed.format)));
    }
    Ok(sniffed)
}

/// Every size an image declares, against [`MAX_SIDE`] and [`MAX_PIXELS`]:
/// the header's, and past it each one a decoder allocates for (a GIF's
/// frames, sized apart from their screen; each TIFF directory, which may
/// name its width twice; a JPEG's frame headers; a PNG's IHDR chunks), and
/// a GIF's frames in all against [`MAX_GIF_PIXELS`]. Refuses with
/// [`Refused::TooLarge`] or [`Refused::TooManyFrames`], and with
/// [`Refused::Undecodable`] when the sizes contradict each other, so that
/// which one a decoder would allocate cannot be told. Reads the structure
/// only: it is how both [`Engine::recognize`] and stage one's fetcher
/// refuse decompression bombs.
pub fn check_sizes(image: &Sniffed, bytes: &[u8]) -> Result<(), Refused> {
    let (width, height) = (image.width, image.height);
    if exceeds_caps(width.into(), height.into()) {
        return Err(Refused::TooLarge { width, height });
    }
    let found = sniff::structure(image.format, bytes);
    if let Some((width, height)) = found.oversized {
        return Err(Refused::TooLarge { width, height });
    }
    if found.frame_pixels > MAX_GIF_PIXELS {
        return Err(Refused::TooManyFrames { frames: found.frames, pixels: found.frame_pixels });
    }
    match found.inconsistent {
        Some(why) => Err(Refused::Undecodable(why)),
        None => Ok(()),
    }
}

/// Whether a size is over [`MAX_SIDE`] or [`MAX_PIXELS`]: such an image is
/// refused before anything decodes it (here, and by stage one's fetcher).
pub fn exceeds_caps(width: u64, height: u64) -> bool {
    width > MAX_SIDE as u64 || height > MAX_SIDE as u64 || width * height > MAX_PIXELS
}

/// The words of a recognized page, in reading order; deletes the iterator
/// when dropped.
struct Words<'a> {
    iter: Option<ResultIter<'a>>,
    started: bool,
}

impl<'a> Words<'a> {
    fn new(api: &'a Api, iter: *mut ffi::TessResultIterator) -> Words<'a> {
        Words { iter: ResultIter::new(api, iter), started: false }
    }
}

impl Iterator for Words<'_> {
    type Item = text::Word;

    fn next(&mut self) -> Option<text::Word> {
        loop {
            let iter = self.iter.as_mut()?;
            if self.started && !iter.next_word() {
                self.iter = None;
                return None;
            }
            self.started = true;
            let (text, confidence, starts_line) = iter.word();
            // An empty word (no text at all, e.g. on a blank page) is skipped.
            if let Some(text) = text {
                return Some(text::Word { text, confidence, starts_line });
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let api = &*self.lib.api;
        // SAFETY: the handle came from TessBaseAPICreate and is freed once;
        // End is harmless on a handle whose Init failed.
        unsafe {
            (api.base_end)(self.handle.as_ptr());
            (api.base_delete)(self.handle.as_ptr());
        }
    }
}
