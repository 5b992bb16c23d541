//! The C functions of Tesseract (`tesseract/capi.h`) and Leptonica
//! (`leptonica/allheaders.h`) this module calls, resolved at run time with
//! `libloading`. Only the functions used are declared; each signature is
//! copied from the headers of Tesseract 5.3 and Leptonica 1.82 (unchanged
//! since Tesseract 4 and Leptonica 1.74 for every function here).
//!
//! C's `BOOL` in `capi.h` is `int`; the C enums (`TessPageSegMode`,
//! `TessPageIteratorLevel`, `TessOcrEngineMode`) are passed as `c_int`, which
//! is how a C compiler passes an enum whose values fit an `int`.

use std::ffi::{c_char, c_float, c_int, c_void, CStr};

use libloading::Library;

use super::Unavailable;

/// `TessBaseAPI`: one recognizer instance (opaque).
#[repr(C)]
pub(super) struct TessBaseApi {
    _private: [u8; 0],
}

/// `TessResultIterator` (opaque).
#[repr(C)]
pub(super) struct TessResultIterator {
    _private: [u8; 0],
}

/// `TessPageIterator` (opaque); a result iterator is also a page iterator.
#[repr(C)]
pub(super) struct TessPageIterator {
    _private: [u8; 0],
}

/// Leptonica's `PIX`, an image (opaque here: read through accessors only).
#[repr(C)]
pub(super) struct Pix {
    _private: [u8; 0],
}

/// `TessOcrEngineMode::OEM_LSTM_ONLY`.
pub(super) const OEM_LSTM_ONLY: c_int = 1;
/// `TessPageIteratorLevel::RIL_TEXTLINE`.
pub(super) const RIL_TEXTLINE: c_int = 2;
/// `TessPageIteratorLevel::RIL_WORD`.
pub(super) const RIL_WORD: c_int = 3;
/// Leptonica's `L_SEVERITY_NONE` (environ.h): print no messages at all.
pub(super) const L_SEVERITY_NONE: c_int = 6;

/// Shared object names tried for Tesseract, in order (the versioned name first:
/// the unversioned one exists only with the -dev package).
#[cfg(not(target_os = "macos"))]
pub(super) const TESSERACT_NAMES: &[&str] = &["libtesseract.so.5", "libtesseract.so.4", "libtesseract.so"];
#[cfg(target_os = "macos")]
pub(super) const TESSERACT_NAMES: &[&str] = &[
    "libtesseract.5.dylib",
    "libtesseract.dylib",
    "/opt/homebrew/lib/libtesseract.dylib",
    "/usr/local/lib/libtesseract.dylib",
];

/// Shared object names tried for Leptonica when Tesseract's own copy does not
/// export its functions (see [`Api::load`]). Leptonica 1.83 renamed
/// `liblept` to `libleptonica`.
#[cfg(not(target_os = "macos"))]
pub(super) const LEPTONICA_NAMES: &[&str] = &["libleptonica.so.6", "liblept.so.5", "libleptonica.so", "liblept.so"];
#[cfg(target_os = "macos")]
pub(super) const LEPTONICA_NAMES: &[&str] = &[
    "libleptonica.6.dylib",
    "libleptonica.dylib",
    "liblept.5.dylib",
    "liblept.dylib",
    "/opt/homebrew/lib/libleptonica.dylib",
    "/usr/local/lib/libleptonica.dylib",
];

/// The resolved functions, and the libraries that keep them valid.
///
/// The function pointers are plain copies of the symbols' addresses; they stay
/// valid as long as the `Library` handles below are alive, which is as long as
/// this struct is (fields are never moved out, and the handles are dropped
/// with it, after every engine holding an `Arc<Api>` is gone).
pub(super) struct Api {
    // --- Tesseract (capi.h) ---
    /// `const char *TessVersion();` — static string, e.g. "5.3.0".
    pub tess_version: unsafe extern "C" fn() -> *const c_char,
    /// `void TessDeleteText(const char *text);` — frees a string that a
    /// `Tess*GetUTF8Text` function returned.
    pub tess_delete_text: unsafe extern "C" fn(*const c_char),
    /// `TessBaseAPI *TessBaseAPICreate();`
    pub base_create: unsafe extern "C" fn() -> *mut TessBaseApi,
    /// `void TessBaseAPIDelete(TessBaseAPI *handle);`
    pub base_delete: unsafe extern "C" fn(*mut TessBaseApi),
    /// `BOOL TessBaseAPISetVariable(TessBaseAPI *handle, const char *name,
    /// const char *value);` — false when the variable does not exist.
    pub base_set_variable: unsafe extern "C" fn(*mut TessBaseApi, *const c_char, *const c_char) -> c_int,
    /// `int TessBaseAPIInit2(TessBaseAPI *handle, const char *datapath,
    /// const char *language, TessOcrEngineMode oem);` — 0 on success;
    /// `datapath` NULL means `TESSDATA_PREFIX` or the compiled-in default.
    pub base_init2: unsafe extern "C" fn(*mut TessBaseApi, *const c_char, *const c_char, c_int) -> c_int,
    /// `const char *TessBaseAPIGetDatapath(TessBaseAPI *handle);` — the
    /// folder the language data was read from (owned by the handle).
    pub base_get_datapath: unsafe extern "C" fn(*mut TessBaseApi) -> *const c_char,
    /// `void TessBaseAPISetPageSegMode(TessBaseAPI *handle, TessPageSegMode mode);`
    pub base_set_page_seg_mode: unsafe extern "C" fn(*mut TessBaseApi, c_int),
    /// `void TessBaseAPISetImage2(TessBaseAPI *handle, struct Pix *pix);` —
    /// takes its own reference (pixClone) to `pix`; the caller still
    /// destroys its own.
    pub base_set_image2: unsafe extern "C" fn(*mut TessBaseApi, *mut Pix),
    /// `int TessBaseAPIRecognize(TessBaseAPI *handle, ETEXT_DESC *monitor);`
    /// — 0 on success; `monitor` may be NULL.
    pub base_recognize: unsafe extern "C" fn(*mut TessBaseApi, *mut c_void) -> c_int,
    /// `TessResultIterator *TessBaseAPIGetIterator(TessBaseAPI *handle);` —
    /// NULL when nothing was recognized; freed with `TessResultIteratorDelete`.
    pub base_get_iterator: unsafe extern "C" fn(*mut TessBaseApi) -> *mut TessResultIterator,
    /// `void TessBaseAPIClear(TessBaseAPI *handle);` — drops the image and
    /// the results, keeps the loaded language data.
    pub base_clear: unsafe extern "C" fn(*mut TessBaseApi),
    /// `void TessBaseAPIEnd(TessBaseAPI *handle);` — frees everything Init
    /// loaded.
    pub base_end: unsafe extern "C" fn(*mut TessBaseApi),
    /// `void TessResultIteratorDelete(TessResultIterator *handle);`
    pub iter_delete: unsafe extern "C" fn(*mut TessResultIterator),
    /// `BOOL TessResultIteratorNext(TessResultIterator *handle,
    /// TessPageIteratorLevel level);` — false past the last element.
    pub iter_next: unsafe extern "C" fn(*mut TessResultIterator, c_int) -> c_int,
    /// `char *TessResultIteratorGetUTF8Text(const TessResultIterator *handle,
    /// TessPageIteratorLevel level);` — NULL or a string to free with
    /// `TessDeleteText`.
    pub iter_get_utf8_text: unsafe extern "C" fn(*const TessResultIterator, c_int) -> *mut c_char,
    /// `float TessResultIteratorConfidence(const TessResultIterator *handle,
    /// TessPageIteratorLevel level);` — 0..100.
    pub iter_confidence: unsafe extern "C" fn(*const TessResultIterator, c_int) -> c_float,
    /// `const TessPageIterator *TessResultIteratorGetPageIteratorConst(
    /// const TessResultIterator *handle);` — a view of the same iterator, not
    /// to be freed.
    pub iter_page_iterator: unsafe extern "C" fn(*const TessResultIterator) -> *const TessPageIterator,
    /// `BOOL TessPageIteratorIsAtBeginningOf(const TessPageIterator *handle,
    /// TessPageIteratorLevel level);`
    pub page_is_at_beginning_of: unsafe extern "C" fn(*const TessPageIterator, c_int) -> c_int,

    // --- Leptonica (allheaders.h) ---
    /// `PIX *pixReadMem(const l_uint8 *data, size_t size);` — decodes any
    /// format Leptonica was built with; NULL when it cannot.
    pub pix_read_mem: unsafe extern "C" fn(*const u8, usize) -> *mut Pix,
    /// `void pixDestroy(PIX **ppix);` — drops one reference, sets `*ppix` NULL.
    pub pix_destroy: unsafe extern "C" fn(*mut *mut Pix),
    /// `l_int32 pixGetWidth(const PIX *pix);`
    pub pix_get_width: unsafe extern "C" fn(*const Pix) -> c_int,
    /// `l_int32 pixGetHeight(const PIX *pix);`
    pub pix_get_height: unsafe extern "C" fn(*const Pix) -> c_int,
    /// `PIX *pixScale(PIX *pixs, l_float32 scalex, l_float32 scaley);` — a new
    /// image (linear interpolation when enlarging), NULL on failure.
    pub pix_scale: unsafe extern "C" fn(*mut Pix, c_float, c_float) -> *mut Pix,
    /// `l_int32 setMsgSeverity(l_int32 newsev);` — process-wide threshold of
    /// Leptonica's messages on stderr; returns the previous one.
    pub set_msg_severity: unsafe extern "C" fn(c_int) -> c_int,

    /// Leptonica, when it had to be opened by name (see [`Api::load`]);
    /// dropped after the pointers above stop being used.
    _leptonica: Option<Library>,
    _tesseract: Library,
}

/// Copies a function pointer out of `lib`.
///
/// # Safety
/// `T` must be the function's true type (the signatures above).
unsafe fn symbol<T: Copy>(lib: &Library, lib_name: &str, name: &'static str) -> Result<T, Unavailable> {
    let with_nul = format!("{name}\0");
    match lib.get::<T>(with_nul.as_bytes()) {
        Ok(sym) => Ok(*sym),
        Err(_) => Err(Unavailable::Symbol { library: lib_name.to_string(), symbol: name }),
    }
}

/// Opens the first of `names` that loads; the error lists every attempt.
fn open_first(names: &[&str]) -> Result<(Library, String), String> {
    let mut failures = Vec::new();
    for name in names {
        // SAFETY: loading Tesseract or Leptonica runs their initialisers,
        // which only set up static tables; no Rust invariants depend on them.
        match unsafe { Library::new(name) } {
            Ok(lib) => return Ok((lib, (*name).to_string())),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(failures.join("; "))
}

impl Api {
    /// Opens Tesseract, then resolves Leptonica's functions from it.
    ///
    /// Leptonica is looked up in Tesseract's handle first: `dlsym` on a handle
    /// searches the library and the ones it depends on, so this finds the very
    /// Leptonica that Tesseract was linked against. Images handed to
    /// Tesseract must come from that copy; opening another by name (a
    /// `libleptonica.so.6` next to the `liblept.so.5` Tesseract uses) could
    /// mix two builds' `PIX`. Only when Tesseract does not expose them
    /// (Leptonica linked statically) is Leptonica opened by name.
    pub(super) fn load() -> Result<Api, Unavailable> {
        Api::load_from(TESSERACT_NAMES, LEPTONICA_NAMES)
    }

    /// [`Api::load`] with other library names (tests: missing libraries).
    pub(super) fn load_from(tesseract_names: &[&str], leptonica_names: &[&str]) -> Result<Api, Unavailable> {
        let (tesseract, tess_name) = open_first(tesseract_names)
            .map_err(|reason| Unavailable::Tesseract { tried: tesseract_names.join(", "), reason })?;
        let tess = &tesseract;
        let t = tess_name.as_str();

        let leptonica = {
            // SAFETY: the type is the one allheaders.h declares.
            let found = unsafe { symbol::<unsafe extern "C" fn(*const u8, usize) -> *mut Pix>(tess, t, "pixReadMem") };
            if found.is_ok() {
                None
            } else {
                let (lib, _) = open_first(leptonica_names)
                    .map_err(|reason| Unavailable::Leptonica { tried: leptonica_names.join(", "), reason })?;
                Some(lib)
            }
        };
        let (lept, l): (&Library, &str) = match &leptonica {
            Some(lib) => (lib, "Leptonica"),
            None => (tess, t),
        };

        // SAFETY (every `symbol` call): the type parameter is the field's type,
        // which is the signature the header declares (see the field docs).
        unsafe {
            Ok(Api {
                tess_version: symbol(tess, t, "TessVersion")?,
                tess_delete_text: symbol(tess, t, "TessDeleteText")?,
                base_create: symbol(tess, t, "TessBaseAPICreate")?,
                base_delete: symbol(tess, t, "TessBaseAPIDelete")?,
                base_set_variable: symbol(tess, t, "TessBaseAPISetVariable")?,
                base_init2: symbol(tess, t, "TessBaseAPIInit2")?,
                base_get_datapath: symbol(tess, t, "TessBaseAPIGetDatapath")?,
                base_set_page_seg_mode: symbol(tess, t, "TessBaseAPISetPageSegMode")?,
                base_set_image2: symbol(tess, t, "TessBaseAPISetImage2")?,
                base_recognize: symbol(tess, t, "TessBaseAPIRecognize")?,
                base_get_iterator: symbol(tess, t, "TessBaseAPIGetIterator")?,
                base_clear: symbol(tess, t, "TessBaseAPIClear")?,
                base_end: symbol(tess, t, "TessBaseAPIEnd")?,
                iter_delete: symbol(tess, t, "TessResultIteratorDelete")?,
                iter_next: symbol(tess, t, "TessResultIteratorNext")?,
                iter_get_utf8_text: symbol(tess, t, "TessResultIteratorGetUTF8Text")?,
                iter_confidence: symbol(tess, t, "TessResultIteratorConfidence")?,
                iter_page_iterator: symbol(tess, t, "TessResultIteratorGetPageIteratorConst")?,
                page_is_at_beginning_of: symbol(tess, t, "TessPageIteratorIsAtBeginningOf")?,
                pix_read_mem: symbol(lept, l, "pixReadMem")?,
                pix_destroy: symbol(lept, l, "pixDestroy")?,
                pix_get_width: symbol(lept, l, "pixGetWidth")?,
                pix_get_height: symbol(lept, l, "pixGetHeight")?,
                pix_scale: symbol(lept, l, "pixScale")?,
                set_msg_severity: symbol(lept, l, "setMsgSeverity")?,
                _leptonica: leptonica,
                _tesseract: tesseract,
            })
        }
    }

    /// Tesseract's version string, e.g. "5.3.0".
    pub(super) fn version(&self) -> String {
        // SAFETY: TessVersion returns a pointer to a static NUL-terminated
        // string (or, defensively, NULL).
        unsafe {
            let p = (self.tess_version)();
            if p.is_null() {
                "unknown".to_string()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }
}

/// An owned Leptonica image: destroyed (one reference dropped) on drop.
pub(super) struct OwnedPix<'a> {
    api: &'a Api,
    pix: *mut Pix,
}

impl<'a> OwnedPix<'a> {
    /// Takes ownership of `pix`; `None` when it is NULL.
    pub(super) fn new(api: &'a Api, pix: *mut Pix) -> Option<OwnedPix<'a>> {
        (!pix.is_null()).then_some(OwnedPix { api, pix })
    }

    pub(super) fn as_ptr(&self) -> *mut Pix {
        self.pix
    }

    /// (width, height) in pixels.
    pub(super) fn size(&self) -> (i64, i64) {
        // SAFETY: `pix` is a live image owned by this value.
        unsafe { ((self.api.pix_get_width)(self.pix) as i64, (self.api.pix_get_height)(self.pix) as i64) }
    }
}

impl Drop for OwnedPix<'_> {
    fn drop(&mut self) {
        // SAFETY: `pix` is non-null and owned here; pixDestroy takes a
        // pointer to the pointer and nulls it.
        unsafe { (self.api.pix_destroy)(&mut self.pix) }
    }
}

/// A string Tesseract allocated: freed with `TessDeleteText` on drop.
pub(super) struct TessText<'a> {
    api: &'a Api,
    text: *mut c_char,
}

impl<'a> TessText<'a> {
    pub(super) fn new(api: &'a Api, text: *mut c_char) -> Option<TessText<'a>> {
        (!text.is_null()).then_some(TessText { api, text })
    }

    pub(super) fn to_string_lossy(&self) -> String {
        // SAFETY: Tesseract returns NUL-terminated strings.
        unsafe { CStr::from_ptr(self.text).to_string_lossy().into_owned() }
    }
}

impl Drop for TessText<'_> {
    fn drop(&mut self) {
        // SAFETY: non-null, allocated by Tesseract, freed once.
        unsafe { (self.api.tess_delete_text)(self.text) }
    }
}

/// A result iterator: deleted on drop.
pub(super) struct ResultIter<'a> {
    api: &'a Api,
    iter: *mut TessResultIterator,
}

impl<'a> ResultIter<'a> {
    pub(super) fn new(api: &'a Api, iter: *mut TessResultIterator) -> Option<ResultIter<'a>> {
        (!iter.is_null()).then_some(ResultIter { api, iter })
    }

    /// The current word's text (`None` for an empty word) and confidence,
    /// and whether it starts a text line.
    pub(super) fn word(&self) -> (Option<String>, f32, bool) {
        // SAFETY: `iter` is a live iterator; the text is freed by TessText;
        // the page iterator view is not owned and not freed.
        unsafe {
            let text = TessText::new(self.api, (self.api.iter_get_utf8_text)(self.iter, RIL_WORD))
                .map(|t| t.to_string_lossy());
            let confidence = (self.api.iter_confidence)(self.iter, RIL_WORD);
            let page = (self.api.iter_page_iterator)(self.iter);
            let starts_line = !page.is_null() && (self.api.page_is_at_beginning_of)(page, RIL_TEXTLINE) != 0;
            (text, confidence, starts_line)
        }
    }

    /// Moves to the next word; false when there is none.
    pub(super) fn next_word(&mut self) -> bool {
        // SAFETY: `iter` is a live iterator.
        unsafe { (self.api.iter_next)(self.iter, RIL_WORD) != 0 }
    }
}

impl Drop for ResultIter<'_> {
    fn drop(&mut self) {
        // SAFETY: non-null, obtained from TessBaseAPIGetIterator, deleted once.
        unsafe { (self.api.iter_delete)(self.iter) }
    }
}
