"""The operator's commands: status, jobs and show, enqueue, retry, cancel, purge, doctor and
convert. They read and steer what the daemon keeps; the daemon never imports them."""
