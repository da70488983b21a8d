"""``python -m train recipe``: from nothing to a verified bundle (downloads, layout, phases)."""
