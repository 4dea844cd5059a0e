"""What happens to one file: read it once, convert it with docling (scans through OCR), write
its outputs and its status sidecar. Depends on docling, pydantic and structlog; never on the
daemon around it (watcher, huey, watchdog).
"""
