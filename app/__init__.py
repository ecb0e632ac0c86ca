"""Stride's PySide6 desktop app: views lay out, controllers act, only controllers talk to the engine worker."""
