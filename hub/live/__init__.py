"""Live speech sessions: audio in, utterances cut into jobs, results out in order.

A layer between the job path (below: it submits utterance jobs like any
client) and the transports (above: it sees connections as `Link`s)."""
