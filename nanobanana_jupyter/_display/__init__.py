"""The display layer: everything a view shows (status words and tones, cost and duration text,
progress, previews, escaped HTML and mimebundles, live output slots). Reads the core; never
changes it.
"""
