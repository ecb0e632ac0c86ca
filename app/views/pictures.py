"""Pictures for the chat: decoded by Qt already scaled down, kept as PNG, and a window to view one larger.

QImageReader decodes straight to at most LONGEST_EDGE px where the format allows (JPEG scales while
decoding), so a 50-megapixel photo never sits in memory at full size; the model sees no more anyway.
Every picture is stored and sent as PNG, so its content hash names the same file on disk, in the
KV cache and in exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QSize, Qt, qInstallMessageHandler
from PySide6.QtGui import QImage, QImageIOHandler, QImageReader, QImageWriter, QPixmap
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QScrollArea, QVBoxLayout, QWidget

LONGEST_EDGE = 3024  # what Step's projector reads at most; larger pictures are scaled to it
READABLE = (
    "png",
    "jpg",
    "jpeg",
    "gif",
    "webp",
    "bmp",
)  # offered in the file dialog; other raster formats Qt reads work too
# Picture formats people have that this Qt may lack a plugin for: named as such, not as "not a picture".
OTHER_PICTURE_SUFFIXES = frozenset(
    {"heic", "heif", "avif", "jxl", "jp2", "tif", "tiff", "psd", "raw", "cr2", "nef", "arw", "dng", "svg", "ico"}
)
DRAWINGS = frozenset({"pdf", "svg", "svgz"})  # Qt renders these, but they are documents, not photos: refused
FILE_FILTER = "Pictures (" + " ".join(f"*.{s}" for s in READABLE) + ");;All files (*)"


class PictureError(ValueError):
    """A file or clipboard content that cannot be attached; the message names it, the problem and the fix."""


@dataclass(frozen=True)
class Picture:
    name: str  # for messages and tooltips
    png: bytes  # what is stored and sent
    image: QImage  # decoded, at most LONGEST_EDGE px on its longest edge


def scaled_size(size: QSize) -> QSize:
    """`size` shrunk so its longest edge is at most LONGEST_EDGE, keeping the aspect ratio."""
    longest = max(size.width(), size.height())
    if longest <= LONGEST_EDGE:
        return size
    return QSize(max(1, size.width() * LONGEST_EDGE // longest), max(1, size.height() * LONGEST_EDGE // longest))


def read_picture(path: Path) -> Picture:
    """Decode a picture file, already scaled; PictureError says why it cannot be attached."""
    name = path.name
    if not path.is_file():
        raise PictureError(f"{name}: no such file" if not path.exists() else f"{name} is a folder, not a picture")
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)  # a phone photo's orientation flag: upright, as viewers show it
    suffix = path.suffix.lower().lstrip(".")
    if not reader.canRead():
        if suffix in OTHER_PICTURE_SUFFIXES:
            raise PictureError(
                f"{name}: Stride cannot read {suffix.upper()} pictures; save it as PNG or JPEG and attach that"
            )
        raise PictureError(f"{name} is not a picture Stride can read; attach a PNG, JPEG, GIF, WebP or BMP file")
    kind = bytes(reader.format().data()).decode()
    if kind in DRAWINGS:
        raise PictureError(f"{name} is a {kind.upper()} file; attach a PNG or JPEG picture")
    full = reader.size()
    if full.isValid():
        scales_while_decoding = reader.supportsOption(QImageIOHandler.ImageOption.ScaledSize)
        if not scales_while_decoding and full.width() * full.height() * 4 > QImageReader.allocationLimit() * 2**20:
            raise PictureError(
                f"{name} is {full.width()} x {full.height()} px, too large to decode in memory; save it at most "
                f"{LONGEST_EDGE} px wide and high (the model sees no more) and attach that"
            )
        reader.setScaledSize(scaled_size(full))
    warnings: list[str] = []
    previous = qInstallMessageHandler(lambda _kind, _context, text: warnings.append(text))
    try:
        image = reader.read()
    finally:
        qInstallMessageHandler(previous)
    # A cut-short JPEG decodes "successfully" with grey where the data ended; only the decoder's warning tells.
    cut_short = any("premature end" in w.lower() for w in warnings)
    if image.isNull() or cut_short:
        problem = "the file ends early" if cut_short else reader.errorString()
        raise PictureError(
            f"{name} is damaged or cut short and cannot be decoded ({problem}); open it in an image viewer, "
            "save it again and attach that"
        )
    return picture_from_image(image, name)


def picture_from_image(image: QImage, name: str = "pasted picture") -> Picture:
    """A picture Qt already holds (pasted): scaled if needed, without transparency, encoded as PNG."""
    if image.isNull():
        raise PictureError(f"the {name} is empty; copy the picture again")
    if scaled_size(image.size()) != image.size():
        image = image.scaled(
            scaled_size(image.size()), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
    image = image.convertToFormat(QImage.Format.Format_RGB888)  # the projector reads RGB; alpha would be lost anyway
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    QImageWriter(buffer, QByteArray(b"png")).write(image)
    buffer.close()
    return Picture(name, bytes(data.data()), image)


def image_from_png(png: bytes) -> QImage:
    return QImage.fromData(png)


def thumbnail(image: QImage, edge: int) -> QPixmap:
    """The picture fitted into an edge x edge square."""
    return QPixmap.fromImage(
        image.scaled(edge, edge, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
    )


class PictureDialog(QDialog):
    """One picture, larger: fitted to most of the screen, scrollable when it is bigger still."""

    def __init__(self, image: QImage, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setObjectName("pictureDialog")
        label = QLabel()
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        screen = self.screen().availableGeometry() if self.screen() else None
        limit = QSize(1200, 900) if screen is None else QSize(screen.width() * 4 // 5, screen.height() * 4 // 5)
        shown = image
        if image.width() > limit.width() or image.height() > limit.height():
            shown = image.scaled(limit, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        label.setPixmap(QPixmap.fromImage(shown))
        self.picture_label = label
        scroll = QScrollArea()
        scroll.setWidget(label)
        scroll.setWidgetResizable(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addWidget(buttons)
        self.resize(min(limit.width(), shown.width() + 48), min(limit.height(), shown.height() + 96))
