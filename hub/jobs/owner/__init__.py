"""The node's owner role: registration, slots, fencing, the owner's accept deadlines."""
