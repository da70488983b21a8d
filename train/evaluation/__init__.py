"""Captioning and scoring: pycocoevalcap metrics, score tables, captioning images, attention pictures."""
