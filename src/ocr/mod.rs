//! Text in images (OCR). Being written.
