"""The job's home role: submits, admission, the queue, attempts, watches, resubmits."""
