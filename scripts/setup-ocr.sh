#!/usr/bin/env bash
# Installs what reading text in images (OCR) needs: the Tesseract and
# Leptonica libraries and Tesseract's English data. discord-indexer loads them
# at run time; without them it runs, and says that images were not read.
#
#   Debian/Ubuntu: tesseract-ocr, tesseract-ocr-eng (apt; as root, or with sudo)
#   macOS:         brew install tesseract
#
# Usage: scripts/setup-ocr.sh      (does nothing when they are installed)
set -euo pipefail
have() {
  # The library, and the English data where the library looks for it.
  ldconfig -p 2>/dev/null | grep -q 'libtesseract\.so\.[0-9]' || return 1
  if [ -n "${TESSDATA_PREFIX:-}" ]; then
    [ -f "$TESSDATA_PREFIX/eng.traineddata" ]
  else
    ls /usr/share/tesseract-ocr/*/tessdata/eng.traineddata >/dev/null 2>&1
  fi
}
if [ "$(uname)" = Darwin ]; then
  if ! brew list tesseract >/dev/null 2>&1; then brew install tesseract; fi
  exit 0
fi
if have; then
  echo "Tesseract (OCR) is installed"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "scripts/setup-ocr.sh: install Tesseract 4 or newer with its English data by your system's means" >&2
  echo "(Debian/Ubuntu: tesseract-ocr tesseract-ocr-eng); without it, text in images is not read" >&2
  exit 1
fi
SUDO=
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends tesseract-ocr tesseract-ocr-eng >/dev/null
have || { echo "scripts/setup-ocr.sh: Tesseract was installed but its library or English data is not found" >&2; exit 1; }
echo "Tesseract (OCR) installed"
