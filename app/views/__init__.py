"""Widgets that lay out and emit signals; controllers act on them."""
