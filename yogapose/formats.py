"""The image formats the service accepts: one table for the edge, fetch, imaging and messages.

Each format has its Pillow plugin name (the only plugin ``Image.open`` may try for it), its
media types (what raw uploads may be labelled and what fetches ask for), its magic bytes
(how the decoder picks the plugin; the Content-Type is never trusted for that) and the file
extensions local tools look for. Everything else (SVG, PDF, TIFF, PSD, AVIF, ICO, ...) is
refused before any decoder runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    pillow: str  # Pillow's format name
    label: str  # as shown in messages
    media_type: str  # canonical MIME type
    aliases: tuple[str, ...]  # other media types clients label it with
    magic: tuple[bytes, ...]  # the file starts with one of these ...
    magic_at_8: bytes = b""  # ... and, for RIFF containers, holds this at offset 8
    extensions: tuple[str, ...] = ()

    @property
    def media_types(self) -> tuple[str, ...]:
        return (self.media_type, *self.aliases)

    def matches(self, data: bytes) -> bool:
        return data.startswith(self.magic) and data[8:8 + len(self.magic_at_8)] == self.magic_at_8


FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("JPEG", "JPEG", "image/jpeg", ("image/jpg", "image/pjpeg"), (b"\xff\xd8\xff",),
                extensions=(".jpg", ".jpeg", ".jpe", ".jfif")),
    ImageFormat("PNG", "PNG", "image/png", (), (b"\x89PNG\r\n\x1a\n",), extensions=(".png",)),
    ImageFormat("WEBP", "WebP", "image/webp", (), (b"RIFF",), b"WEBP", extensions=(".webp",)),
    ImageFormat("BMP", "BMP", "image/bmp", ("image/x-ms-bmp",), (b"BM",), extensions=(".bmp",)),
    ImageFormat("GIF", "GIF", "image/gif", (), (b"GIF87a", b"GIF89a"), extensions=(".gif",)),
)

JPEG, PNG, WEBP, BMP, GIF = FORMATS

#: Every media type a raw image upload may carry (the bytes are sniffed regardless).
MEDIA_TYPES: frozenset[str] = frozenset(t for f in FORMATS for t in f.media_types)
#: File extensions local tools treat as images.
EXTENSIONS: frozenset[str] = frozenset(e for f in FORMATS for e in f.extensions)
#: "JPEG, PNG, WebP, BMP or GIF", for error messages.
NAMES = ", ".join(f.label for f in FORMATS[:-1]) + f" or {FORMATS[-1].label}"
#: ``Accept`` header for image fetches, so content-negotiating CDNs do not pick AVIF/JXL.
ACCEPT = ",".join(f.media_type for f in FORMATS) + ",*/*;q=0.5"


def sniff(data: bytes) -> ImageFormat | None:
    """The format ``data`` claims by its magic bytes, or None for anything we do not decode."""
    for fmt in FORMATS:
        if fmt.matches(data):
            return fmt
    return None
