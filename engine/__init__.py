"""Stride's inference engine: GGUF inspection, llama.cpp bindings, the MTP drafter and the decode loop.

Nothing here imports Qt except the thread adapter (engine/qt_worker.py), so the
engine runs and is tested without a display.
"""
