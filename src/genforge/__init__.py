"""genforge: self-hosted content generation that tells the truth about what it generated."""

__version__ = "0.1.0"
