"""The I/O shell towards peers: the transport-neutral session layer, the HTTP endpoints,
and the websockets server and link (the only modules importing websockets)."""
