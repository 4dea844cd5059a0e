"""OCR for scans and photos inside docling's native pipeline: the pipeline, the engine and
the reading order of the lines it finds."""
