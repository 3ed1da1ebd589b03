"""Data: scanning and decoding image folders (images), the decoded-image cache (cache), the splits and tf.data pipelines (loading)."""
