"""Small asyncio helpers that know nothing of the hub: the loop-turn batching rule, eager
task start, the deadline loop and its clock."""
