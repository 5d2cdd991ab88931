"""digestd: personalised daily and weekly email digests for a tech-news site."""

__version__ = "0.1.0"
