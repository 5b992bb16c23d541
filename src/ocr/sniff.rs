//! What a file is, from its first bytes: format and pixel size, read from
//! the header by `imagesize` without decoding anything.

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

/// Whether PNG or JPEG bytes visibly stop before their end marker: a PNG
/// whose chunks run past the data or never reach IEND, a JPEG without an EOI
/// marker. Such files are what an interrupted download leaves; the decoders
/// would reject them too, but only after complaining on stderr, which no
/// setting of Leptonica's silences. `false` for other formats, and for
/// anything that looks complete.
pub(super) fn visibly_truncated(format: ImageFormat, bytes: &[u8]) -> bool {
    match format {
        ImageFormat::Png => !png_reaches_iend(bytes),
        // Inside the compressed data 0xFF is always followed by 0x00 or a
        // restart marker, so FF D9 appears only as (some image's) end marker.
        ImageFormat::Jpeg => !bytes.windows(2).any(|w| w == [0xFF, 0xD9]),
        _ => false,
    }
}

/// Walks a PNG's chunks (length, type, data, CRC) from after the signature.
fn png_reaches_iend(bytes: &[u8]) -> bool {
    let mut at = 8usize;
    loop {
        let Some(header) = bytes.get(at..at + 8) else { return false };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(end) = at.checked_add(12).and_then(|e| e.checked_add(len)) else { return false };
        if end > bytes.len() {
            return false;
        }
        if &header[4..8] == b"IEND" {
            return true;
        }
        at = end;
    }
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
    fn cut_pngs_and_jpegs_are_seen_as_truncated() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/images/");
        let png = std::fs::read(format!("{dir}error.png")).unwrap();
        let jpeg = std::fs::read(format!("{dir}two_lines.jpg")).unwrap();
        assert!(!visibly_truncated(ImageFormat::Png, &png));
        assert!(!visibly_truncated(ImageFormat::Jpeg, &jpeg));
        for cut in [9, 33, png.len() / 2, png.len() - 1] {
            assert!(visibly_truncated(ImageFormat::Png, &png[..cut]), "{cut}");
        }
        assert!(visibly_truncated(ImageFormat::Jpeg, &jpeg[..jpeg.len() / 2]));
        // Bytes after the end marker are allowed.
        let mut trailing = png.clone();
        trailing.extend_from_slice(b"trailing bytes");
        assert!(!visibly_truncated(ImageFormat::Png, &trailing));
        // A chunk length that would overflow.
        let mut huge = png[..33].to_vec();
        huge.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, b'I', b'D', b'A', b'T']);
        assert!(visibly_truncated(ImageFormat::Png, &huge));
    }
}
