"""Paths shown in narrow places: the folders give way first, so the file's name stays readable."""

from __future__ import annotations

from typing import TypeAlias

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QAbstractItemView, QStyledItemDelegate, QStyleOptionViewItem

AnyIndex: TypeAlias = QModelIndex | QPersistentModelIndex


def elide_path(text: str, metrics: QFontMetrics, width: int) -> str:
    """text (a path, maybe with a note after it) cut to width: leading folders become "…/" one by one;
    only a file name that does not fit alone is cut, in its middle."""
    if metrics.horizontalAdvance(text) <= width:
        return text
    parts = text.split("/")
    for start in range(1, len(parts)):
        shorter = "…/" + "/".join(parts[start:])
        if metrics.horizontalAdvance(shorter) <= width:
            return shorter
    return metrics.elidedText(parts[-1], Qt.TextElideMode.ElideMiddle, width)


class PathItemDelegate(QStyledItemDelegate):
    """List rows that hold paths: as wide as the list (no horizontal scroll bar), the path cut by elide_path."""

    def sizeHint(self, option: QStyleOptionViewItem, index: AnyIndex) -> QSize:
        return QSize(1, super().sizeHint(option, index).height())  # the view's width, never the text's

    def initStyleOption(self, option: QStyleOptionViewItem, index: AnyIndex) -> None:
        super().initStyleOption(option, index)
        margin = 12  # the style's text margins
        option.text = elide_path(option.text, option.fontMetrics, option.rect.width() - margin)


def show_paths(view: QAbstractItemView) -> None:
    """Give a list of paths the delegate, and no horizontal scroll bar."""
    view.setItemDelegate(PathItemDelegate(view))
    view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
