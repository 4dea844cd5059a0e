"""The processes around one file's journey: the daemon (`daemon/`), the operator's commands
(`commands/`) and the queue backends (`backends/`), with settings, logs, queue and heartbeats
shared at this level."""
