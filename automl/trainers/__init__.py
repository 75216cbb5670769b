"""Trainers: one module per track, behind the small Protocol in base.py."""
