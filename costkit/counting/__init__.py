"""Counting: tokens (o200k_base, offline), chat-completions requests, images, the per-message
cache, the model catalogue, and request files. Nothing here prices or records anything."""
