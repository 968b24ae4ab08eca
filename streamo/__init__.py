"""Streamo: teach a video LLM to be a real-time streaming assistant.

The core package (this one) has no ms-swift import; ``streamo.swift_plugin`` is the
thin layer that registers templates, datasets and the loss with ms-swift.
"""

__version__ = "0.1.0"
