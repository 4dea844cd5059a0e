"""The processes around one file's journey: settings, logging, queue, observer, workers, CLI."""
