"""The pure core: the wire model, capabilities, the snapshot and the one selector, the job
state machine, configuration and metrics. No I/O, no clock, no asyncio: time comes in
as arguments, randomness as an injected `random.Random`."""
