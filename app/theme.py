"""Light and dark themes: Fusion style with palettes, following the system unless the user chose one."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from app.resources import stylesheet

ACCENT = QColor("#2f6fed")


def dark_palette() -> QPalette:
    p = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#1e2026",
        QPalette.ColorRole.WindowText: "#e6e8ec",
        QPalette.ColorRole.Base: "#16181d",
        QPalette.ColorRole.AlternateBase: "#262932",
        QPalette.ColorRole.Text: "#e6e8ec",
        QPalette.ColorRole.Button: "#2a2d36",
        QPalette.ColorRole.ButtonText: "#e6e8ec",
        QPalette.ColorRole.ToolTipBase: "#2a2d36",
        QPalette.ColorRole.ToolTipText: "#e6e8ec",
        QPalette.ColorRole.PlaceholderText: "#8a909c",
        QPalette.ColorRole.Mid: "#3a3e49",
        QPalette.ColorRole.Midlight: "#333742",
        QPalette.ColorRole.Dark: "#121317",
        QPalette.ColorRole.Light: "#3f4350",
        QPalette.ColorRole.Highlight: ACCENT.name(),
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#7aa7ff",
    }
    for role, colour in roles.items():
        p.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b707c"))
    return p


def light_palette() -> QPalette:
    p = QApplication.style().standardPalette()
    p.setColor(QPalette.ColorRole.Window, QColor("#f6f7f9"))
    p.setColor(QPalette.ColorRole.AlternateBase, QColor("#eef1f5"))
    p.setColor(QPalette.ColorRole.Highlight, ACCENT)
    p.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    return p


def system_prefers_dark() -> bool:
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


def apply_theme(app: QApplication, theme: str) -> str:
    """Apply "light", "dark" or "system"; return the one in effect."""
    app.setStyle("Fusion")
    effective = ("dark" if system_prefers_dark() else "light") if theme == "system" else theme
    app.setPalette(dark_palette() if effective == "dark" else light_palette())
    app.setStyleSheet(stylesheet())
    return effective
