"""The long-running processes: the supervisor, the watcher (observer, settle tracker, intake,
reconciler) and the huey consumer with its worker processes."""
