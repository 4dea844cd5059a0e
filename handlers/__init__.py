"""What happens to one file: digest, convert with docling, write outputs and its status sidecar.

Depends on docling and pydantic only; never on the daemon around it (watcher, huey, watchdog).
"""
