"""The job path: the job's home role (`JobService` and its parts), the node's owner role
(`NodeRegistry`), the inbound router for other hubs' envelopes, and the `Link` protocol
the path sends through. Knows no transport."""
