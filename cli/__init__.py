"""Command-line interface (click): ``semcodec encode | decode | info | train``."""
