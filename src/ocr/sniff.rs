//! What a file is, from its first bytes: format and pixel size, read from
//! the header by `imagesize` without decoding anything; and what its
//! structure holds past the header (every frame's size, whether it reaches
//! its end marker), walked without decoding either.

use imagesize::ImageType;

/// The image formats [`sniff`] recognizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Gif,
    Webp,
    Bmp,
    Tiff,
    /// HEIF with HEVC (or unknown) coding: iPhone photos (`.heic`).
    Heic,
    /// HEIF with AV1 coding.
    Avif,
    /// JPEG XL.
    Jxl,
}

impl ImageFormat {
    /// The MIME type of the format.
    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Bmp => "image/bmp",
            ImageFormat::Tiff => "image/tiff",
            ImageFormat::Heic => "image/heic",
            ImageFormat::Avif => "image/avif",
            ImageFormat::Jxl => "image/jxl",
        }
    }

    /// A short lowercase name: "png", "jpeg", ...
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Gif => "gif",
            ImageFormat::Webp => "webp",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Tiff => "tiff",
            ImageFormat::Heic => "heic",
            ImageFormat::Avif => "avif",
            ImageFormat::Jxl => "jxl",
        }
    }

    /// Whether the OCR engine decodes this format (Leptonica as distributions
    /// build it: PNG, JPEG, GIF, WebP, BMP, TIFF). HEIC, AVIF and JPEG XL are
    /// recognized as images but not decoded.
    pub fn decodable(self) -> bool {
        !matches!(self, ImageFormat::Heic | ImageFormat::Avif | ImageFormat::Jxl)
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a file's first bytes say it is. The file's name and the content
/// type a server sent are never trusted: they are whatever the uploader
/// made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub format: ImageFormat,
    pub mime: &'static str,
    /// Pixel size as the header declares it (saturated at `u32::MAX`).
    pub width: u32,
    pub height: u32,
}

/// The format and size an image's header declares; `None` when the bytes are
/// not one of the [`ImageFormat`]s or the header is cut short. Reads only the
/// header (a few hundred bytes, up to the first frame header for JPEG).
pub fn sniff(bytes: &[u8]) -> Option<Sniffed> {
    let format = match imagesize::image_type(bytes).ok()? {
        ImageType::Png => ImageFormat::Png,
        ImageType::Jpeg => ImageFormat::Jpeg,
        ImageType::Gif => ImageFormat::Gif,
        ImageType::Webp => ImageFormat::Webp,
        ImageType::Bmp => ImageFormat::Bmp,
        ImageType::Tiff => ImageFormat::Tiff,
        ImageType::Heif(imagesize::Compression::Av1) => ImageFormat::Avif,
        ImageType::Heif(_) => ImageFormat::Heic,
        ImageType::Jxl => ImageFormat::Jxl,
        // Texture and editor formats nobody posts as a picture, and TGA,
        // whose header test matches arbitrary bytes.
        _ => return None,
    };
    let size = imagesize::blob_size(bytes).ok()?;
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Some(Sniffed { format, mime: format.mime(), width: clamp(size.width), height: clamp(size.height) })
}

/// Whether an image's bytes reach the end its format marks: a PNG's chunks
/// reach IEND, a JPEG's markers reach EOI, a GIF's blocks reach its trailer,
/// a WebP holds the bytes its RIFF header counts. Bytes after that end are
/// allowed: a motion photo is a JPEG with a video after it, and some
/// programs append data to PNGs. Files that stop before are what an
/// interrupted download or upload leaves; the decoders would reject them
/// too, but only after complaining on stderr, which no setting of
/// Leptonica's silences. `true` for formats without an end marker.
pub fn complete(format: ImageFormat, bytes: &[u8]) -> bool {
    match format {
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif => structure(format, bytes).complete,
        ImageFormat::Webp => {
            let riff = bytes.get(4..8).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
            riff.is_some_and(|size| size.saturating_add(8) <= bytes.len())
        }
        _ => true,
    }
}

/// What walking an image's structure past its header found: whether it
/// reaches its end marker, and the size of every frame, page, scan or tile
/// a decoder allocates for. The header [`sniff`] reads declares one size;
/// the decoders allocate what each frame declares (giflib each GIF frame,
/// libtiff a TIFF directory's last width tag, libjpeg the first frame
/// header it meets), so every one of them is checked against the caps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Structure {
    /// The walk reached the format's end marker (PNG, JPEG, GIF).
    pub complete: bool,
    /// The first size declared that is over [`super::MAX_SIDE`] or
    /// [`super::MAX_PIXELS`].
    pub oversized: Option<(u32, u32)>,
    /// GIF frames, and their pixels in all (giflib keeps them all).
    pub frames: u32,
    pub frame_pixels: u64,
    /// Why the declared sizes cannot be trusted: they contradict each other
    /// (two widths for one image, a frame outside its screen, a second PNG
    /// header), or the structure that declares them cannot be followed.
    pub inconsistent: Option<String>,
}

impl Structure {
    fn size(&mut self, width: u64, height: u64) {
        if self.oversized.is_none() && super::exceeds_caps(width, height) {
            let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            self.oversized = Some((clamp(width), clamp(height)));
        }
    }

    fn inconsistent(&mut self, why: String) {
        self.inconsistent.get_or_insert(why);
    }
}

/// Walks an image's structure (see [`Structure`]). WebP and BMP are not
/// walked: their decoders allocate the size the header [`sniff`] reads
/// (libwebp refuses a still image whose bitstream size differs from its
/// canvas, and Leptonica does not decode animated WebP; Leptonica reads a
/// BMP's size from the same header fields, and only uncompressed BMPs).
pub(super) fn structure(format: ImageFormat, bytes: &[u8]) -> Structure {
    let mut found = Structure::default();
    match format {
        ImageFormat::Png => walk_png(bytes, &mut found),
        ImageFormat::Jpeg => walk_jpeg(bytes, &mut found),
        ImageFormat::Gif => walk_gif(bytes, &mut found),
        ImageFormat::Tiff => walk_tiff(bytes, &mut found),
        _ => {}
    }
    found
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..at.checked_add(2)?).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at.checked_add(4)?).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..at.checked_add(2)?).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

/// Walks a PNG's chunks (length, type, data, CRC) from after the signature
/// to IEND. The first chunk must be the one IHDR: libpng reads the size from
/// there and refuses a second, but the header reader takes whatever bytes
/// sit where IHDR's size would be.
fn walk_png(bytes: &[u8], found: &mut Structure) {
    let mut at = 8usize;
    let mut first = true;
    loop {
        let (Some(len), Some(kind)) = (be32(bytes, at), bytes.get(at + 4..at + 8)) else { return };
        let Some(end) = at.checked_add(12).and_then(|e| e.checked_add(len as usize)) else { return };
        if kind == b"IHDR" {
            if let (Some(w), Some(h)) = (be32(bytes, at + 8), be32(bytes, at + 12)) {
                found.size(w.into(), h.into());
            }
            if !first {
                found.inconsistent("the png file has a second IHDR chunk".into());
            }
        } else if first {
            found.inconsistent("the png file does not start with its IHDR chunk".into());
        }
        first = false;
        if end > bytes.len() {
            return;
        }
        if kind == b"IEND" {
            found.complete = true;
            return;
        }
        at = end;
    }
}

/// Walks a JPEG's markers from SOI to the first EOI, the way libjpeg reads
/// them: segments are skipped by their length (so an EXIF thumbnail's own
/// end marker, inside APP1, is not taken for the picture's); after SOS the
/// entropy-coded data runs to the next marker, a 0xFF followed by neither
/// 0x00 (a stuffed 0xFF) nor another 0xFF (fill); stray bytes between
/// segments are skipped, as libjpeg does with a warning. Every frame header
/// (SOFn) met is a size: libjpeg uses the first and refuses a second.
fn walk_jpeg(bytes: &[u8], found: &mut Structure) {
    let mut at = 2usize;
    loop {
        // The next marker.
        let marker = loop {
            let Some(ff) = bytes.get(at..).and_then(|rest| rest.iter().position(|&b| b == 0xFF)) else { return };
            let mut m = at + ff + 1;
            while bytes.get(m) == Some(&0xFF) {
                m += 1;
            }
            let Some(&code) = bytes.get(m) else { return };
            at = m + 1;
            if code != 0 {
                break code;
            }
        };
        match marker {
            // EOI.
            0xD9 => {
                found.complete = true;
                return;
            }
            // Markers without a segment: RSTn (inside entropy-coded data),
            // TEM, and SOI.
            0xD0..=0xD8 | 0x01 => {}
            _ => {
                let Some(len) = be16(bytes, at).map(usize::from).filter(|&l| l >= 2) else { return };
                let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
                if is_frame && len >= 7 {
                    // Precision, then height and width.
                    if let (Some(h), Some(w)) = (be16(bytes, at + 3), be16(bytes, at + 5)) {
                        found.size(w.into(), h.into());
                    }
                }
                at += len;
                if at > bytes.len() {
                    return;
                }
            }
        }
    }
}

/// Walks a GIF's blocks from the logical screen descriptor to the trailer:
/// extensions, and image descriptors with their data. giflib allocates each
/// frame at the size its descriptor declares, whatever the screen's, and
/// keeps every frame; a frame must lie within the screen.
fn walk_gif(bytes: &[u8], found: &mut Structure) {
    let (Some(screen_w), Some(screen_h), Some(&flags)) = (le16(bytes, 6), le16(bytes, 8), bytes.get(10)) else {
        return;
    };
    let color_table = |flags: u8| if flags & 0x80 != 0 { 3usize << ((flags & 7) + 1) } else { 0 };
    // Data sub-blocks: a length byte, that many bytes; a 0 length ends them.
    let skip_blocks = |mut at: usize| -> Option<usize> {
        loop {
            let n = *bytes.get(at)? as usize;
            at += 1 + n;
            if n == 0 {
                return Some(at);
            }
        }
    };
    let mut at = 13 + color_table(flags);
    loop {
        match bytes.get(at) {
            Some(0x3B) => {
                found.complete = true;
                return;
            }
            // An extension: its label, then data sub-blocks.
            Some(0x21) => match skip_blocks(at + 2) {
                Some(next) => at = next,
                None => return,
            },
            Some(0x2C) => {
                let (Some(left), Some(top), Some(w), Some(h), Some(&image_flags)) = (
                    le16(bytes, at + 1),
                    le16(bytes, at + 3),
                    le16(bytes, at + 5),
                    le16(bytes, at + 7),
                    bytes.get(at + 9),
                ) else {
                    return;
                };
                found.size(w.into(), h.into());
                found.frames += 1;
                found.frame_pixels = found.frame_pixels.saturating_add(u64::from(w) * u64::from(h));
                if u32::from(left) + u32::from(w) > screen_w.into() || u32::from(top) + u32::from(h) > screen_h.into() {
                    found.inconsistent(format!(
                        "gif frame {} is {w}x{h} pixels at ({left}, {top}), past its {screen_w}x{screen_h} screen",
                        found.frames
                    ));
                }
                // The local colour table, the LZW code size, the data.
                match skip_blocks(at + 10 + color_table(image_flags) + 1) {
                    Some(next) => at = next,
                    None => return,
                }
            }
            _ => return,
        }
    }
}

/// Most TIFF directories (pages) followed; a file with more is refused.
const MAX_TIFF_PAGES: usize = 1000;

/// Walks a TIFF's directories (classic and BigTIFF). Each must declare its
/// width and length exactly once, one value each (libtiff keeps the last of
/// two, the header reader the first); every page and tile size is checked,
/// although Leptonica reads the first page only. Directories that cannot be
/// followed (past the end of the file, in a loop) make the sizes untrusted.
fn walk_tiff(bytes: &[u8], found: &mut Structure) {
    if let Err(why) = tiff_directories(bytes, found) {
        found.inconsistent(why);
    }
}

fn tiff_directories(bytes: &[u8], found: &mut Structure) -> Result<(), String> {
    let big_endian = bytes.starts_with(b"MM");
    let uint = |at: usize, n: usize| -> Option<u64> {
        let b = bytes.get(at..at.checked_add(n)?)?;
        let fold = |acc: u64, &x: &u8| (acc << 8) | u64::from(x);
        Some(if big_endian { b.iter().fold(0, fold) } else { b.iter().rev().fold(0, fold) })
    };
    // Classic TIFF: 2-byte entry count, 12-byte entries with 4-byte counts
    // and values, 4-byte offsets. BigTIFF: 8, 20, 8 and 8.
    let big = uint(2, 2) == Some(43);
    let (count_bytes, entry_bytes, word) = if big { (8, 20, 8) } else { (2, 12, 4) };
    let mut next = uint(if big { 8 } else { 4 }, word);
    let mut seen = Vec::new();
    while let Some(offset) = next.filter(|&o| o != 0) {
        let page = seen.len() + 1;
        if seen.contains(&offset) || page > MAX_TIFF_PAGES {
            return Err(format!("the tiff directories loop or run past {MAX_TIFF_PAGES} pages"));
        }
        seen.push(offset);
        let past_end = || format!("tiff directory {page} lies past the end of the file");
        let start = usize::try_from(offset).map_err(|_| past_end())?;
        let count = uint(start, count_bytes).ok_or_else(past_end)?;
        // Where entry `i` starts (`count`: where the next offset is).
        let entry = |i: u64| -> Option<usize> {
            let i = usize::try_from(i).ok()?;
            start.checked_add(count_bytes)?.checked_add(i.checked_mul(entry_bytes)?)
        };
        // Tags 256 ImageWidth, 257 ImageLength, 322 TileWidth, 323 TileLength.
        let mut sizes: [Vec<u64>; 4] = Default::default();
        for i in 0..count {
            let at = entry(i).ok_or_else(past_end)?;
            let (Some(tag), Some(kind), Some(n)) = (uint(at, 2), uint(at + 2, 2), uint(at + 4, word)) else {
                return Err(past_end());
            };
            let slot = match tag {
                256 => 0,
                257 => 1,
                322 => 2,
                323 => 3,
                _ => continue,
            };
            let value_at = at + 4 + word;
            // SHORT, LONG or (BigTIFF) LONG8, left-justified in the value field.
            let value = match kind {
                3 => uint(value_at, 2),
                4 => uint(value_at, 4),
                16 if big => uint(value_at, 8),
                _ => None,
            };
            match value.filter(|_| n == 1) {
                Some(v) => sizes[slot].push(v),
                None => found.inconsistent(format!("tiff directory {page} declares a size that is not one number")),
            }
        }
        let largest = |slot: usize| sizes[slot].iter().copied().max();
        match (largest(0), largest(1)) {
            (Some(w), Some(h)) => found.size(w, h),
            _ => found.inconsistent(format!("tiff directory {page} does not declare its size")),
        }
        if let (Some(w), Some(h)) = (largest(2), largest(3)) {
            found.size(w, h);
        }
        if sizes.iter().any(|values| values.len() > 1) {
            found.inconsistent(format!("tiff directory {page} declares a size twice"));
        }
        next = Some(entry(count).and_then(|at| uint(at, word)).ok_or_else(past_end)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_header_gives_format_and_size() {
        // From imagesize's documentation: a PNG header declaring 123x321.
        let header = [
            0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
            0x00, 0x7B, 0x00, 0x00, 0x01, 0x41, 0x08, 0x06, 0x00, 0x00, 0x00, 0x9A, 0x38, 0xC4,
        ];
        let s = sniff(&header).unwrap();
        assert_eq!(s, Sniffed { format: ImageFormat::Png, mime: "image/png", width: 123, height: 321 });
    }

    #[test]
    fn fixtures_are_what_their_bytes_say() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/images/");
        let read = |name: &str| std::fs::read(format!("{dir}{name}")).unwrap();

        let png = sniff(&read("error.png")).unwrap();
        assert_eq!((png.format, png.mime), (ImageFormat::Png, "image/png"));
        assert!(png.width > png.height && png.height > 0);

        let jpeg = sniff(&read("two_lines.jpg")).unwrap();
        assert_eq!((jpeg.format, jpeg.mime), (ImageFormat::Jpeg, "image/jpeg"));
        assert!(jpeg.width > 0 && jpeg.height > 0);

        // The truncated PNG still has its header.
        assert_eq!(sniff(&read("truncated.png")).unwrap().format, ImageFormat::Png);
        // Text named .png is not an image.
        assert_eq!(sniff(&read("not_an_image.png")), None);
    }

    #[test]
    fn garbage_and_short_input_are_not_images() {
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"\x89PNG"), None);
        assert_eq!(sniff(b"<!DOCTYPE html><html><body>nope</body></html>"), None);
        assert_eq!(sniff(&[0u8; 64]), None);
    }

    #[test]
    fn cut_files_are_seen_as_incomplete() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/images/");
        let png = std::fs::read(format!("{dir}error.png")).unwrap();
        let jpeg = std::fs::read(format!("{dir}two_lines.jpg")).unwrap();
        assert!(complete(ImageFormat::Png, &png));
        assert!(complete(ImageFormat::Jpeg, &jpeg));
        for cut in [9, 33, png.len() / 2, png.len() - 1] {
            assert!(!complete(ImageFormat::Png, &png[..cut]), "{cut}");
        }
        for cut in [3, 4, 20, jpeg.len() / 2, jpeg.len() - 1] {
            assert!(!complete(ImageFormat::Jpeg, &jpeg[..cut]), "{cut}");
        }
        // Bytes after the end marker are allowed.
        let mut trailing = png.clone();
        trailing.extend_from_slice(b"trailing bytes");
        assert!(complete(ImageFormat::Png, &trailing));
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"\xFF\xD8 and a video");
        assert!(complete(ImageFormat::Jpeg, &trailing));
        // A chunk length that would overflow.
        let mut huge = png[..33].to_vec();
        huge.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, b'I', b'D', b'A', b'T']);
        assert!(!complete(ImageFormat::Png, &huge));
        // Fill bytes before a marker, stuffed bytes and restart markers in
        // the entropy-coded data.
        let scan = [0xFF, 0xD8, 0xFF, 0xFF, 0xDA, 0, 2, 1, 0xFF, 0, 2, 0xFF, 0xD0, 3, 0xFF, 0xFF, 0xD9];
        assert!(complete(ImageFormat::Jpeg, &scan));
        assert!(!complete(ImageFormat::Jpeg, &scan[..scan.len() - 1]));
        // A GIF's trailer, a WebP's RIFF size; no end marker in BMP.
        assert!(complete(ImageFormat::Gif, b"GIF89a\x01\0\x01\0\0\0\0;"));
        assert!(!complete(ImageFormat::Gif, b"GIF89a\x01\0\x01\0\0\0\0"));
        assert!(complete(ImageFormat::Webp, b"RIFF\x04\0\0\0WEBP"));
        assert!(!complete(ImageFormat::Webp, b"RIFF\x05\0\0\0WEBP"));
        assert!(complete(ImageFormat::Bmp, b"BM"));
    }

    #[test]
    fn walks_stop_on_hostile_structures() {
        // A TIFF whose directory points at itself.
        let mut tiff = b"II*\0\x08\0\0\0\x02\0".to_vec();
        for (tag, value) in [(256u16, 10u16), (257, 10)] {
            tiff.extend_from_slice(&tag.to_le_bytes());
            tiff.extend_from_slice(&[3, 0, 1, 0, 0, 0]);
            tiff.extend_from_slice(&value.to_le_bytes());
            tiff.extend_from_slice(&[0, 0]);
        }
        tiff.extend_from_slice(&8u32.to_le_bytes());
        let found = structure(ImageFormat::Tiff, &tiff);
        assert!(found.oversized.is_none());
        assert!(found.inconsistent.unwrap().contains("loop"));
        // Cut inside its directory.
        assert!(structure(ImageFormat::Tiff, &tiff[..20]).inconsistent.is_some());
        // The same, big-endian, is read the same way.
        let mut mm = b"MM\0*\0\0\0\x08\0\x02".to_vec();
        for (tag, value) in [(256u16, 30_000u16), (257, 10)] {
            mm.extend_from_slice(&tag.to_be_bytes());
            mm.extend_from_slice(&[0, 3, 0, 0, 0, 1]);
            mm.extend_from_slice(&value.to_be_bytes());
            mm.extend_from_slice(&[0, 0]);
        }
        mm.extend_from_slice(&[0; 4]);
        let found = structure(ImageFormat::Tiff, &mm);
        assert_eq!((found.oversized, found.inconsistent), (Some((30_000, 10)), None));
        // A GIF block that runs past the end.
        let found = structure(ImageFormat::Gif, b"GIF89a\x01\0\x01\0\0\0\0!\xF9\xFF");
        assert!(!found.complete);
    }
}
